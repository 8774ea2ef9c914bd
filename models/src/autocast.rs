//! libtorch's CPU autocast to bf16, scoped to one operation ([`CpuAutocast`]).
//!
//! Inside a scope, the operations libtorch's autocast lists for lower precision (convolutions,
//! transposed convolutions, matrix products) run in bf16 on this CPU's bf16 kernels, with their
//! inputs and weights cast by libtorch itself; everything else keeps f32. tch exposes only CUDA's
//! autocast, so `csrc/autocast.cpp` (compiled by `build.rs`) calls
//! `at::autocast::set_autocast_enabled(at::kCPU, ..)`. The state is thread-local, as in libtorch.
//!
//! Autocast caches the bf16 copy of every weight it casts; a cached copy goes stale when the
//! optimiser updates the weight in place, so every scope drops the cache when it ends.
#![allow(unsafe_code)]

use std::os::raw::c_int;

extern "C" {
    fn ocular_cpu_autocast(enabled: c_int) -> c_int;
    fn ocular_autocast_clear_cache();
}

/// While alive, CPU autocast to bf16 is on for this thread; dropping it restores the previous
/// state and clears autocast's cache of cast weights.
#[must_use = "autocast is on only while the guard lives"]
pub(crate) struct CpuAutocast {
    previous: bool,
}

impl CpuAutocast {
    /// Turns CPU autocast on for this thread.
    pub(crate) fn enable() -> Self {
        // SAFETY: the C function only reads and writes libtorch's thread-local autocast state;
        // it takes and returns plain integers and cannot fail.
        let previous = unsafe { ocular_cpu_autocast(1) } != 0;
        Self { previous }
    }
}

impl Drop for CpuAutocast {
    fn drop(&mut self) {
        // SAFETY: as in `enable`; clearing the cache only drops libtorch's own cached tensors.
        unsafe {
            ocular_cpu_autocast(c_int::from(self.previous));
            ocular_autocast_clear_cache();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// A convolution inside the scope runs in bf16, close to f32; outside it, in f32 again.
    #[test]
    fn convolutions_run_in_bf16_inside_the_scope_only() {
        tch::manual_seed(1);
        let options = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([1, 3, 8, 8], options);
        let w = Tensor::randn([4, 3, 3, 3], options);
        let conv = || x.conv2d(&w, None::<Tensor>, [1], [1], [1], 1);
        let reference = conv();
        let inside = {
            let _autocast = CpuAutocast::enable();
            conv()
        };
        assert_eq!(inside.kind(), Kind::BFloat16);
        let error = (inside.to_kind(Kind::Float) - &reference).abs().max();
        let scale = reference.abs().max();
        assert!(
            error.double_value(&[]) <= 0.02 * scale.double_value(&[]),
            "bf16 error {error:?}"
        );
        assert_eq!(conv().kind(), Kind::Float, "the scope ended");
    }
}
