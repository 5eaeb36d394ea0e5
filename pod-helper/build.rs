//! Links the helper as a position-dependent executable.
//!
//! Why: the helper runs once per pod and its per-pod memory is crid's
//! headline figure. In a PIE, the dynamic loader relocates the GOT and
//! `.data.rel.ro` (vtables, string tables) at start, which dirties those
//! pages privately in every helper: 72 KiB per pod, measured. Linked
//! without PIE they stay clean file pages shared by every pod. Debian's
//! own containerd, containerd-shim-runc-v2 and runc (the shim the helper
//! replaces) are position-dependent executables too, so the helper gives
//! up nothing those already running as root on the node have; libraries,
//! heap, stacks and mmaps are still randomised.

fn main() {
    // Only x86_64/aarch64 GNU targets are built and tested; elsewhere keep
    // the toolchain's default.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") && std::env::var_os("CRID_HELPER_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-env-changed=CRID_HELPER_PIE");
}
