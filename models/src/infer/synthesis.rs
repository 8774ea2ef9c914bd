//! The synthesis network `g_s` on its own: the decoder of a model file, or a second decoder of
//! the same latents (the realism decoder `g_s'` of a companion file).
//!
//! ```text
//! g_s: tconv5/2 (M->N) IGDN tconv5/2 (N->N) IGDN tconv5/2 (N->N) IGDN tconv5/2 (N->3)
//! ```
//!
//! It runs in horizontal strips of output rows, each recomputing the few hidden rows it shares
//! with its neighbours (the halo of the 5x5 kernels), with the values of the whole image at
//! once, to the bit (module docs of [`super`]).

use std::ops::Range;

use safetensors::tensor::SafeTensors;

use super::conv::{ConvKind, ConvShape, SubPixelConv};
use super::network::{check_channels, Activation, Chain, Tensors, SYNTHESIS_STRIP_ROWS};
use super::{Buffers, FeatureMap, InferError, Planes, Strip};

/// `g_s`: its hidden layers channels-last, its last layer (3 output channels) in the sub-pixel
/// form (`SubPixelConv`), to channels-first planes.
#[derive(Clone, Debug)]
pub struct Synthesis {
    /// All layers but the last, each with its inverse GDN.
    hidden: Chain,
    /// The last layer.
    output: SubPixelConv,
    /// The gain on `y_hat` before the first layer (a network conditioned on the observer mix,
    /// at a non-zero mix).
    input_gain: Option<Vec<f32>>,
}

impl Synthesis {
    /// From the chain of all four layers.
    ///
    /// # Errors
    /// [`InferError::Format`] if the chain has no layer or its last is not transposed.
    pub(super) fn new(mut chain: Chain) -> Result<Self, InferError> {
        let (output, _) = chain
            .layers
            .pop()
            .ok_or_else(|| InferError::Format("g_s has no layer".into()))?;
        if output.shape().kind != ConvKind::Transposed {
            return Err(InferError::Format("g_s ends in a regular layer".into()));
        }
        Ok(Self {
            hidden: chain,
            output: SubPixelConv::new(output),
            input_gain: None,
        })
    }

    /// A copy (sharing the convolutions' weights) whose hidden layer `i`'s activation is
    /// `activation(current, i)` and which multiplies `y_hat`'s channels by `input_gain` first.
    pub(super) fn conditioned(
        &self,
        activation: impl Fn(&Activation, usize) -> Activation,
        input_gain: Vec<f32>,
    ) -> Self {
        let mut conditioned = self.clone();
        for (i, (_, current)) in conditioned.hidden.layers.iter_mut().enumerate() {
            *current = activation(current, i);
        }
        conditioned.input_gain = Some(input_gain);
        conditioned
    }

    /// The `g_s.*` tensors of a safetensors file (a model file, or a realism decoder's companion
    /// file): four transposed 5x5 stride-2 layers with inverse GDN between them, M and N read
    /// from `g_s.0.weight` (`M x N x 5 x 5`).
    ///
    /// # Errors
    /// [`InferError::Format`] if the bytes are not safetensors, [`InferError::Missing`],
    /// [`InferError::TensorShape`] or [`InferError::Dtype`] for a tensor it cannot use.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, InferError> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| InferError::Format(e.to_string()))?;
        let tensors = Tensors { file };
        let m = tensors.leading_dimension("g_s.0.weight")?;
        let n = tensors.leading_dimension("g_s.2.weight")?;
        if n == 0 || m == 0 {
            return Err(InferError::TensorShape {
                name: "g_s".into(),
                found: vec![m, n],
                expected: vec![96, 64],
            });
        }
        Self::new(tensors.transform("g_s", ConvKind::Transposed, [m, n, n, n, 3])?)
    }

    /// Channels of `y_hat` (M).
    pub fn in_channels(&self) -> usize {
        self.hidden.in_channels()
    }

    /// Hidden channels (N).
    pub fn hidden_channels(&self) -> usize {
        self.output.shape().in_channels
    }

    /// `g_s`: `y_hat` (M planes of `h x w`) to the reconstruction (3 planes of `16 h x 16 w`),
    /// not clamped. Runs in strips of [`SYNTHESIS_STRIP_ROWS`] rows, with the values of the
    /// whole image at once, to the bit.
    ///
    /// # Errors
    /// [`InferError::Input`] if `y_hat` does not have M channels.
    pub fn run(&self, y_hat: &Planes) -> Result<Planes, InferError> {
        check_channels(y_hat, self.hidden.in_channels(), "g_s")?;
        let height = self.output_side(y_hat.height);
        let width = self.output_side(y_hat.width);
        let plane = height * width;
        let mut data = vec![0.0f32; 3 * plane];
        self.in_strips::<InferError>(y_hat, SYNTHESIS_STRIP_ROWS, |first, strip| {
            let len = strip.height * strip.width;
            for (c, values) in strip.data.chunks_exact(len).enumerate() {
                data[c * plane + first * width..][..len].copy_from_slice(values);
            }
            Ok(())
        })?;
        Planes::new(3, height, width, data)
    }

    /// `g_s` in horizontal strips of `strip_rows` output rows (the last may be shorter), handed
    /// to `emit` top to bottom with the index of their first row: the same values as
    /// [`Self::run`], to the bit, with memory that grows with the strip, not the image.
    /// Each strip recomputes the few rows of every hidden layer it shares with its neighbours
    /// (the halo of the 5x5 kernels).
    ///
    /// # Errors
    /// [`InferError::Input`] if `y_hat` does not have M channels or `strip_rows` is 0, else what
    /// `emit` returns.
    pub fn in_strips<E: From<InferError>>(
        &self,
        y_hat: &Planes,
        strip_rows: usize,
        mut emit: impl FnMut(usize, Planes) -> Result<(), E>,
    ) -> Result<(), E> {
        check_channels(y_hat, self.hidden.in_channels(), "g_s")?;
        if strip_rows == 0 {
            return Err(InferError::Input("strips of 0 rows".into()).into());
        }
        let height = self.output_side(y_hat.height);
        // The strips' maps reuse one another's memory (see `Buffers`).
        let mut buffers = Buffers::default();
        for first in (0..height).step_by(strip_rows) {
            let rows = first..first.saturating_add(strip_rows).min(height);
            emit(first, self.strip(y_hat, rows, &mut buffers))?;
        }
        Ok(())
    }

    /// The shapes of the layers of `g_s`, last included.
    fn shapes(&self) -> impl Iterator<Item = ConvShape> + '_ {
        let hidden = self.hidden.layers.iter().map(|(conv, _)| conv.shape());
        hidden.chain(std::iter::once(self.output.shape()))
    }

    /// The side of the reconstruction of a `y_hat` side of `side` (rows or columns alike).
    pub fn output_side(&self, side: usize) -> usize {
        self.shapes()
            .fold(side, |h, shape| shape.output_size(h, 1).0)
    }

    /// Output rows `rows` of `g_s`: the rows every layer needs, from the last back to `y_hat`,
    /// then the layers on those rows only, their maps in buffers of `buffers` (given back
    /// when the next layer has read them).
    pub(crate) fn strip(
        &self,
        y_hat: &Planes,
        rows: Range<usize>,
        buffers: &mut Buffers,
    ) -> Planes {
        // heights[i]: rows of the input of layer i.
        let mut heights = vec![y_hat.height];
        for shape in self.shapes() {
            let h = heights[heights.len() - 1];
            heights.push(shape.output_size(h, 1).0);
        }
        // wanted[i]: output rows of layer i; wanted[0] before it: rows of y_hat.
        let last = self.hidden.layers.len();
        let mut wanted = vec![self.output.input_rows(&rows, heights[last]), rows];
        for ((conv, _), &height) in self.hidden.layers.iter().zip(&heights).rev() {
            let needed = conv.input_rows(&wanted[0], height);
            wanted.insert(0, needed);
        }
        let mut map = FeatureMap::from_plane_rows(y_hat, wanted[0].clone());
        if let Some(gain) = &self.input_gain {
            for pixel in map.data.chunks_exact_mut(gain.len()) {
                pixel.iter_mut().zip(gain).for_each(|(v, gain)| *v *= gain);
            }
        }
        for (i, (conv, activation)) in self.hidden.layers.iter().enumerate() {
            let input = Strip {
                map: &map,
                first: wanted[i].start,
                total: heights[i],
            };
            let next = conv.forward_rows(
                input,
                wanted[i + 1].clone(),
                |row, scratch| activation.apply(row, scratch),
                buffers,
            );
            buffers.give(std::mem::replace(&mut map, next).data);
        }
        let input = Strip {
            map: &map,
            first: wanted[last].start,
            total: heights[last],
        };
        let planes = self
            .output
            .forward_rows(input, wanted[last + 1].clone(), buffers);
        buffers.give(map.data);
        planes
    }

    /// The hidden layers with their activations (tests).
    #[cfg(test)]
    pub(super) fn hidden_layers(&self) -> &[(super::conv::Conv, super::network::Activation)] {
        &self.hidden.layers
    }

    /// The last layer (tests).
    #[cfg(test)]
    pub(super) fn output_layer(&self) -> &SubPixelConv {
        &self.output
    }
}
