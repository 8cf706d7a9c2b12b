//! Records the target triple, which an agent reports so that its central host compiles
//! plugins for it.
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=SLUICE_TARGET={target}");
}
