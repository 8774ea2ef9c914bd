//! Bakes libtorch's library directory into the run-time search path of every binary and test
//! of this crate, so nothing needs `LD_LIBRARY_PATH`; with the `torch` feature, compiles the few
//! lines of C++ that switch libtorch's CPU autocast (`csrc/autocast.cpp`), which tch does not
//! expose.
fn main() {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    #[cfg(feature = "torch")]
    autocast(std::path::Path::new(&lib));
}

#[cfg(feature = "torch")]
fn autocast(lib: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib
        .parent()
        .map(|root| root.join("include"))
        .unwrap_or_default();
    cc::Build::new()
        .cpp(true)
        .file("csrc/autocast.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag_if_supported("-std=c++17")
        .define(
            "_GLIBCXX_USE_CXX11_ABI",
            std::env::var("LIBTORCH_CXX11_ABI")
                .unwrap_or_else(|_| "1".into())
                .as_str(),
        )
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false)
        .compile("ocular_autocast");
}
