//! The one matrix product the layers use, a safe wrapper around the `gemm` crate.
//!
//! `dst[i][j] += sum_l lhs[i][l] * rhs[l][j]` for row-major `lhs` (`m x k`) and `rhs` (`k x n`)
//! into `dst` rows `row_stride` apart. The product always runs on the calling thread
//! (`Parallelism::None`): callers parallelise over output rows, so how a value is computed
//! never depends on the number of threads.
//!
//! `gemm` picks its kernel (AVX-512, AVX2 + FMA, SSE, NEON, scalar) from the CPU's features at
//! run time, and its blocking from the CPU's cache sizes, so the rounding of a product — which
//! sums are fused, in which order partial sums meet — may differ between *machines*. On one
//! machine it is a pure function of the operands and the shapes.
#![allow(unsafe_code)]

/// Where a matrix lies in a slice: element `(i, j)` at `i * row_stride + j * col_stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Layout {
    /// A dense row-major `rows x cols` matrix.
    pub(crate) fn dense(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// A row-major matrix whose rows lie `row_stride` apart.
    pub(crate) fn rows_apart(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// Whether every element lies inside a slice of `len` (and the matrix is not empty).
    fn fits(&self, len: usize) -> bool {
        let last = (self.rows.checked_sub(1), self.cols.checked_sub(1));
        let (Some(i), Some(j)) = last else {
            return false;
        };
        i.checked_mul(self.row_stride)
            .zip(j.checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b))
            .is_some_and(|end| end < len)
    }
}

/// `dst += lhs * rhs` (see the module docs) for matrices laid out as `dst_layout`, `lhs_layout`
/// and `rhs_layout` say.
///
/// # Panics
/// If the shapes do not chain or a matrix does not fit in its slice (a bug of the caller: every
/// caller derives the layouts from the slices it allocated).
pub(crate) fn add_product(
    (dst, dst_layout): (&mut [f32], Layout),
    (lhs, lhs_layout): (&[f32], Layout),
    (rhs, rhs_layout): (&[f32], Layout),
) {
    let (m, k, n) = (lhs_layout.rows, lhs_layout.cols, rhs_layout.cols);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        rhs_layout.rows == k
            && dst_layout.rows == m
            && dst_layout.cols == n
            && dst_layout.fits(dst.len())
            && lhs_layout.fits(lhs.len())
            && rhs_layout.fits(rhs.len()),
        "product {dst_layout:?} = {lhs_layout:?} {rhs_layout:?} on slices of {}, {}, {}",
        dst.len(),
        lhs.len(),
        rhs.len()
    );
    let stride = |v: usize| isize::try_from(v).expect("a stride inside a slice fits in isize");
    // SAFETY: the assertion above keeps every element the product reads (`lhs` (i, l), `rhs`
    // (l, j)) and writes (`dst` (i, j), i < m, j < n, l < k) inside its slice; `dst` is borrowed
    // mutably, so it aliases neither operand; `gemm` reads and writes nothing else and keeps no
    // pointer after it returns.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            stride(dst_layout.col_stride),
            stride(dst_layout.row_stride),
            true,
            lhs.as_ptr(),
            stride(lhs_layout.col_stride),
            stride(lhs_layout.row_stride),
            rhs.as_ptr(),
            stride(rhs_layout.col_stride),
            stride(rhs_layout.row_stride),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_with_strided_rows() {
        let (m, k, n, row_stride) = (5, 7, 3, 8);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 * 0.5).collect();
        let mut dst = vec![1.0f32; (m - 1) * row_stride + n];
        add_product(
            (&mut dst, Layout::rows_apart(m, n, row_stride)),
            (&lhs, Layout::dense(m, k)),
            (&rhs, Layout::dense(k, n)),
        );
        for i in 0..m {
            for j in 0..row_stride.min(dst.len() - i * row_stride) {
                let expected = if j < n {
                    1.0 + (0..k).map(|l| lhs[i * k + l] * rhs[l * n + j]).sum::<f32>()
                } else {
                    1.0
                };
                assert_eq!(dst[i * row_stride + j], expected, "({i}, {j})");
            }
        }
    }
}
