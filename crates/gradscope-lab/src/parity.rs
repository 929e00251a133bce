//! The host side of the firmware parity check: the same `digest <name> <hex>` lines the firmware prints.

/// Every parity line, in the firmware's order.
pub fn digest_lines() -> Vec<String> {
    let mut out = Vec::new();
    gradscope_core::parity::init_digests(&mut |name, format, d| {
        out.push(format!("digest init/{name}/{format} {d:x}"))
    });
    gradscope_core::parity::backprop_digests(&mut |name, format, d| {
        out.push(format!("digest backprop/{name}/{format} {d:x}"))
    });
    out
}
