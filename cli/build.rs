//! Bakes libtorch's library directory into the run-time search path of every binary and test
//! of this crate, so nothing needs `LD_LIBRARY_PATH`.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
