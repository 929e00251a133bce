//! Sweeps in parallel, with a progress bar.
//!
//! Every job is seeded by its own configuration and results come back in input order, so a sweep gives the
//! same numbers for any thread count (`RAYON_NUM_THREADS`; a test compares 1 and 2). Workers get large stacks:
//! the core keeps whole networks in fixed-size arrays.

use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

/// Stack of each worker thread (the deepest stacks hold 64 layers of 64 × 64 in f64 with their gradients).
pub const STACK_BYTES: usize = 256 << 20;

fn pool() -> Result<&'static rayon::ThreadPool> {
    static POOL: OnceLock<std::result::Result<rayon::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(STACK_BYTES)
            .thread_name(|i| format!("gradscope-{i}"))
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow!("cannot start worker threads: {e}"))
}

/// Run `f` on a worker thread (with its large stack) and return its result.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(pool()?.install(f))
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(label.to_string());
    b
}

/// Run `f` on every item in parallel; results in input order, the first error wins.
pub fn sweep<T, R, F>(label: &str, items: &[T], f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync + Send,
{
    let progress = bar(items.len() as u64, label);
    let out = pool()?.install(|| {
        items
            .par_iter()
            .map(|item| {
                let r = f(item);
                progress.inc(1);
                r
            })
            .collect::<Result<Vec<R>>>()
    });
    progress.finish_and_clear();
    out
}

/// Run one job on a worker thread (with the large stack).
pub fn one<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    pool()?.install(f)
}
