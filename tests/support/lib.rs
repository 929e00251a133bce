//! Shared by the cross-crate tests and benchmarks: wide-integer oracles for the fixed-point formats, and
//! test plumbing.
#![deny(missing_docs)]

pub mod oracle;

/// Run `f` on a thread with a 64 MiB stack: deep stacks of layers are bigger than a test thread's default
/// 2 MiB, and the core builds them in place on the stack.
pub fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .map(|h| h.join())
    {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => panic!("cannot spawn a test thread: {e}"),
    }
}

/// Proptest cases for an oracle suite: `default`, or `GRADSCOPE_ORACLE_CASES` when set (mutation testing
/// lowers it so that each mutant's tests take seconds; see `ci/mutants.sh`).
pub fn oracle_cases(default: u32) -> u32 {
    std::env::var("GRADSCOPE_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
