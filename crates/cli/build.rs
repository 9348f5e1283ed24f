//! Link options of the `meshwork` binary.

fn main() {
    // Segments aligned to 64 KiB (issue 16; bench/results/2026-12-06-vm.md, "Idle RSS"). The
    // kernel maps an executable's page cache into a process up to 64 KiB at a time around each
    // page fault (fault-around, in page-cache folios aligned in the file). With the linker's
    // 4 KiB alignment the code is loaded 64 KiB-aligned only one start in 16; otherwise every
    // window straddles two folios and both are mapped. Measured, 8 starts each: a sidecar's
    // RSS before its first request 17.6 -> 16.2 MiB (median), after one request 18.05 -> 17.81
    // MiB. The file grows by at most the padding; nothing else changes.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=65536");
}
