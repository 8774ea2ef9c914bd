//! A reader for PyTorch's *legacy* (pre-1.6, non-zip) `torch.save` format, limited to what a
//! saved `state_dict` uses, so that pretrained weights can be converted without Python torch.
//!
//! # The format
//!
//! `torch.save(obj, f, _use_new_zipfile_serialization=False)` writes, one after the other:
//!
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c` (a `LONG1`),
//! 2. a pickle of the protocol version `1001`,
//! 3. a pickle of a "sys info" dict (`little_endian`, `type_sizes`, ...),
//! 4. the pickle of the object itself. Every tensor is
//!    `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//!    backward_hooks)`, where `storage` is a *persistent id* (`BINPERSID`) naming the tuple
//!    `('storage', torch.FloatStorage, key, location, numel, view_metadata)`,
//! 5. a pickle of the list of storage keys, in the order their data follows,
//! 6. for each key of that list: the element count as a little-endian `i64`, then the raw
//!    little-endian data of that many elements.
//!
//! # What is supported
//!
//! Pickle protocol <= 2 opcodes that such files contain (plus a few harmless neighbours:
//! `BINFLOAT`, `SHORT_BINUNICODE`, `APPEND`), the globals `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` and the `torch.*Storage` classes; nothing else is
//! called or constructed (unknown globals are an error, never executed). The top-level object
//! must be a dict of names to tensors (an `nn.Module`'s `state_dict`, including its
//! `_metadata` attribute, which is ignored). Storage views (`view_metadata` other than
//! `None`, written only by very old torch versions) and big-endian files are rejected.
//!
//! The pickle memo stores copies: a container fetched from the memo after it was mutated would
//! be seen as it was when memoised. `torch.save` of a `state_dict` never shares containers that
//! way (only strings, globals and tuples are fetched again).
//!
//! Every length, offset and stride is bounds-checked against the file; malformed input gives a
//! [`LegacyError`], never a panic.

use std::collections::HashMap;

/// The magic number `torch.save` writes first (`torch.serialization.MAGIC_NUMBER`).
pub const MAGIC_NUMBER: i128 = 0x1950_a86a_20f9_469c_fc6c;
/// The legacy serialization protocol version (`torch.serialization.PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: i128 = 1001;

/// Deepest nesting / largest stack accepted, a guard against hostile inputs.
const MAX_STACK: usize = 1 << 20;
/// Largest tensor rank accepted.
const MAX_RANK: usize = 16;
/// Deepest nesting of tuples, lists and dicts accepted (a state dict needs 4).
const MAX_DEPTH: usize = 32;
/// Most values one pickle may create, memo copies included (the 47 kB state-dict pickle of
/// EfficientNet-Lite0 creates about 11,000).
const MAX_VALUES: usize = 1 << 21;

/// An error while reading a legacy `torch.save` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// The input ended inside a pickle or inside the storage data.
    #[error("truncated input at byte {offset}: {what}")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// The pickle stream is malformed or uses something this reader does not support.
    #[error("invalid pickle at byte {offset}: {message}")]
    Pickle {
        /// Byte offset of the offending opcode.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The pickles are well formed but do not describe a legacy torch file / state dict.
    #[error("not a legacy torch state dict: {0}")]
    Format(String),
}

/// Element type of a tensor, from the `torch.*Storage` class of its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyDtype {
    /// `torch.DoubleStorage`
    F64,
    /// `torch.FloatStorage`
    F32,
    /// `torch.HalfStorage`
    F16,
    /// `torch.BFloat16Storage`
    BF16,
    /// `torch.LongStorage`
    I64,
    /// `torch.IntStorage`
    I32,
    /// `torch.ShortStorage`
    I16,
    /// `torch.CharStorage`
    I8,
    /// `torch.ByteStorage`
    U8,
    /// `torch.BoolStorage`
    Bool,
}

impl LegacyDtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The matching safetensors dtype.
    pub fn safetensors_dtype(self) -> safetensors::Dtype {
        use safetensors::Dtype;
        match self {
            Self::F64 => Dtype::F64,
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::BF16 => Dtype::BF16,
            Self::I64 => Dtype::I64,
            Self::I32 => Dtype::I32,
            Self::I16 => Dtype::I16,
            Self::I8 => Dtype::I8,
            Self::U8 => Dtype::U8,
            Self::Bool => Dtype::BOOL,
        }
    }
}

/// A tensor read from a legacy file: contiguous, row-major, little-endian element bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyTensor {
    /// Element type.
    pub dtype: LegacyDtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// `numel * dtype.size()` bytes, row-major (the saved strides already applied).
    pub data: Vec<u8>,
}

impl LegacyTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as `f32`, or `None` when the tensor is not `F32`.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == LegacyDtype::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// The elements as `f64` (converted from any numeric dtype; `Bool` as 0/1).
    pub fn to_f64(&self) -> Vec<f64> {
        let n = self.dtype.size();
        self.data
            .chunks_exact(n)
            .map(|b| match self.dtype {
                LegacyDtype::F64 => {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                }
                LegacyDtype::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                LegacyDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
                LegacyDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
                LegacyDtype::I64 => {
                    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64
                }
                LegacyDtype::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                LegacyDtype::I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
                LegacyDtype::I8 => f64::from(b[0] as i8),
                LegacyDtype::U8 | LegacyDtype::Bool => f64::from(b[0]),
            })
            .collect()
    }
}

/// Reads a legacy `torch.save` file holding a dict of tensors (a `state_dict`).
///
/// Returns the entries in the order of the pickled dict.
///
/// # Errors
/// [`LegacyError`] when the bytes are truncated, malformed, not little-endian, use pickle
/// features or globals outside the supported subset, or the top-level object is not a dict
/// of string keys to tensors whose offsets and strides lie inside their storages.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, LegacyTensor)>, LegacyError> {
    let mut reader = Reader { bytes, pos: 0 };
    read_preamble(&mut reader)?;
    let root = reader.pickle()?;
    let keys = read_storage_keys(&mut reader)?;
    let (tensors, declared) = tensor_entries(root)?;
    let storages = read_storages(&mut reader, &keys, &declared)?;
    if reader.pos != bytes.len() {
        return Err(LegacyError::Format(format!(
            "{} trailing bytes after the last storage",
            bytes.len() - reader.pos
        )));
    }
    tensors
        .into_iter()
        .map(|(name, t)| {
            let storage = storages.get(&t.storage.key).ok_or_else(|| {
                LegacyError::Format(format!(
                    "tensor {name:?}: storage {} has no data",
                    t.storage.key
                ))
            })?;
            let tensor = gather(&t, storage)
                .map_err(|m| LegacyError::Format(format!("tensor {name:?}: {m}")))?;
            Ok((name, tensor))
        })
        .collect()
}

/// The storages a file's tensors refer to: key -> (dtype, number of elements).
type Declared = HashMap<String, (LegacyDtype, usize)>;

/// Reads the three pickles before the object: the magic number, the protocol version and the
/// system information, which must say little-endian.
fn read_preamble(reader: &mut Reader<'_>) -> Result<(), LegacyError> {
    let magic = reader.pickle()?;
    if !matches!(magic, Value::Int(MAGIC_NUMBER)) {
        return Err(LegacyError::Format(
            "missing torch magic number (a zip-format file, or not a torch file)".into(),
        ));
    }
    match reader.pickle()? {
        Value::Int(PROTOCOL_VERSION) => {}
        Value::Int(v) => {
            return Err(LegacyError::Format(format!(
                "unsupported protocol version {v} (expected {PROTOCOL_VERSION})"
            )))
        }
        other => {
            return Err(LegacyError::Format(format!(
                "protocol version is a {}",
                other.kind()
            )))
        }
    }
    let little_endian = match &reader.pickle()? {
        Value::Dict(d) => d.items.chunks_exact(2).find_map(|kv| match kv {
            [Value::Str(k), Value::Bool(b)] if k == "little_endian" => Some(*b),
            _ => None,
        }),
        _ => None,
    };
    match little_endian {
        Some(true) => Ok(()),
        Some(false) => Err(LegacyError::Format(
            "big-endian files are not supported".into(),
        )),
        None => Err(LegacyError::Format(
            "sys info without `little_endian`".into(),
        )),
    }
}

/// Reads the pickled list of storage keys that follows the object, in the order of their data.
fn read_storage_keys(reader: &mut Reader<'_>) -> Result<Vec<String>, LegacyError> {
    match reader.pickle()? {
        Value::List(list) => list
            .items
            .into_iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s),
                other => Err(LegacyError::Format(format!(
                    "storage key is a {}, not a string",
                    other.kind()
                ))),
            })
            .collect(),
        other => Err(LegacyError::Format(format!(
            "expected the list of storage keys, found a {}",
            other.kind()
        ))),
    }
}

/// The named tensors of the top-level dict `root`, in its order, and the storages they declare
/// (each declared alike wherever it is shared).
fn tensor_entries(root: Value) -> Result<(Vec<(String, TensorRef)>, Declared), LegacyError> {
    let entries = match root {
        Value::Dict(d) => d.items,
        other => {
            return Err(LegacyError::Format(format!(
                "top-level object is not a dict: {}",
                other.kind()
            )))
        }
    };
    let mut declared = Declared::new();
    let mut tensors = Vec::with_capacity(entries.len() / 2);
    let mut names = std::collections::HashSet::new();
    let mut entries = entries.into_iter();
    while let (Some(k), Some(v)) = (entries.next(), entries.next()) {
        let name = match k {
            Value::Str(s) => s,
            other => {
                return Err(LegacyError::Format(format!(
                    "dict key is a {}, not a string",
                    other.kind()
                )))
            }
        };
        if !names.insert(name.clone()) {
            return Err(LegacyError::Format(format!("key {name:?} repeats")));
        }
        let t = match v {
            Value::Tensor(t) => t,
            other => {
                return Err(LegacyError::Format(format!(
                    "entry {name:?} is not a tensor but {}",
                    other.kind()
                )))
            }
        };
        let storage = (t.storage.dtype, t.storage.numel);
        if *declared.entry(t.storage.key.clone()).or_insert(storage) != storage {
            return Err(LegacyError::Format(format!(
                "storage {} declared twice with different type or size",
                t.storage.key
            )));
        }
        tensors.push((name, t));
    }
    Ok((tensors, declared))
}

/// Reads the storages' data, which follow the pickles in the order of `keys`: per storage its
/// element count (which must be the declared one), then its bytes.
fn read_storages<'a>(
    reader: &mut Reader<'a>,
    keys: &[String],
    declared: &Declared,
) -> Result<HashMap<String, &'a [u8]>, LegacyError> {
    let mut storages = HashMap::new();
    for key in keys {
        let &(dtype, numel) = declared.get(key).ok_or_else(|| {
            LegacyError::Format(format!("storage {key} has data but no tensor refers to it"))
        })?;
        let count = reader.u64_le("storage element count")?;
        if usize::try_from(count).ok() != Some(numel) {
            return Err(LegacyError::Format(format!(
                "storage {key}: {count} elements in the data, {numel} declared"
            )));
        }
        let len = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| LegacyError::Format(format!("storage {key}: size overflows")))?;
        let data = reader.take(len, "storage data")?;
        if storages.insert(key.clone(), data).is_some() {
            return Err(LegacyError::Format(format!("storage {key} listed twice")));
        }
    }
    Ok(storages)
}

/// Copies the elements a (offset, shape, stride) view selects into a contiguous buffer.
fn gather(t: &TensorRef, storage: &[u8]) -> Result<LegacyTensor, String> {
    let elem = t.storage.dtype.size();
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let shape = t.shape.clone();
    if numel == 0 {
        return Ok(LegacyTensor {
            dtype: t.storage.dtype,
            shape,
            data: Vec::new(),
        });
    }
    // The largest storage index the view touches must lie inside the storage.
    let mut last = t.offset;
    for (&d, &s) in t.shape.iter().zip(&t.stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or("offset overflows")?;
    }
    if last >= t.storage.numel {
        return Err(format!(
            "view reaches element {last} of a storage of {} elements",
            t.storage.numel
        ));
    }
    let total = numel.checked_mul(elem).ok_or("size overflows")?;
    let mut data = Vec::with_capacity(total);
    // A dimension of size 1 is never stepped over: its stride (possibly huge) does not matter.
    let stride: Vec<usize> = t
        .shape
        .iter()
        .zip(&t.stride)
        .map(|(&d, &s)| if d == 1 { 0 } else { s })
        .collect();
    let rank = shape.len();
    let mut index = vec![0usize; rank];
    let mut at = t.offset;
    loop {
        let start = at * elem;
        data.extend_from_slice(&storage[start..start + elem]);
        // Odometer increment over the dimensions, last fastest.
        let mut dim = rank;
        loop {
            if dim == 0 {
                debug_assert_eq!(data.len(), total);
                return Ok(LegacyTensor {
                    dtype: t.storage.dtype,
                    shape,
                    data,
                });
            }
            dim -= 1;
            index[dim] += 1;
            at += stride[dim];
            if index[dim] < shape[dim] {
                break;
            }
            // No overflow: stride * (size - 1) <= `last` was checked above.
            at -= stride[dim] * shape[dim];
            index[dim] = 0;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    key: String,
    dtype: LegacyDtype,
    numel: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    StorageClass(LegacyDtype),
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Tuple(Seq),
    List(Seq),
    /// Keys and values alternating. Keys are not deduplicated (a repeated key of the state
    /// dict is an error later); torch never writes one.
    Dict(Seq),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// The items of a tuple, list or dict with their nesting depth and total number of values,
/// kept up to date so that hostile pickles (deep nesting, exponential memo copies) are
/// rejected in O(1) per operation instead of exhausting the stack or memory.
#[derive(Debug, Clone, PartialEq)]
struct Seq {
    items: Vec<Value>,
    depth: usize,
    weight: usize,
}

impl Seq {
    fn new(items: Vec<Value>) -> Result<Self, String> {
        let mut seq = Seq {
            items: Vec::with_capacity(items.len()),
            depth: 1,
            weight: 1,
        };
        for v in items {
            seq.push(v)?;
        }
        Ok(seq)
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        self.depth = self.depth.max(1 + v.depth());
        if self.depth > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        self.weight += v.weight();
        self.items.push(v);
        Ok(())
    }
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.depth,
            _ => 0,
        }
    }

    /// Number of values this one holds, itself included.
    fn weight(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.weight,
            _ => 1,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// An entry of the pickle VM's stack: a value or a MARK.
enum Slot {
    Mark,
    Value(Value),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], LegacyError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(LegacyError::Truncated {
                offset: self.pos,
                what,
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, LegacyError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16_le(&mut self, what: &'static str) -> Result<u16, LegacyError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_le(&mut self, what: &'static str) -> Result<u32, LegacyError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_le(&mut self, what: &'static str) -> Result<u64, LegacyError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn line(&mut self, what: &'static str) -> Result<&'a str, LegacyError> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(LegacyError::Truncated {
                offset: self.pos,
                what,
            })?;
        let at = self.pos;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| LegacyError::Pickle {
            offset: at,
            message: format!("{what} is not UTF-8"),
        })?;
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize, what: &'static str) -> Result<String, LegacyError> {
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| LegacyError::Pickle {
            offset: at,
            message: format!("{what} is not UTF-8"),
        })
    }

    /// Runs the pickle VM over one pickle (up to and including its STOP) and returns its value.
    fn pickle(&mut self) -> Result<Value, LegacyError> {
        let mut vm = Vm::default();
        loop {
            let at = self.pos;
            let err = |message: String| LegacyError::Pickle {
                offset: at,
                message,
            };
            if vm.stack.len() > MAX_STACK {
                return Err(err("stack too deep".into()));
            }
            vm.count(1).map_err(err)?;
            match self.u8("opcode")? {
                // PROTO
                0x80 => {
                    let v = self.u8("protocol")?;
                    if v > 2 {
                        return Err(err(format!("pickle protocol {v} is not supported (<= 2)")));
                    }
                }
                // STOP
                b'.' => return vm.stop().map_err(err),
                op @ (b'('
                | b')'
                | b't'
                | 0x85..=0x87
                | b']'
                | b'a'
                | b'e'
                | b'}'
                | b's'
                | b'u') => {
                    vm.structure(op).map_err(err)?;
                }
                op @ (b'N' | 0x88 | 0x89 | b'J' | b'K' | b'M' | 0x8a | b'G' | b'X' | 0x8c) => {
                    let value = self.constant(op, at)?;
                    vm.stack.push(Slot::Value(value));
                }
                // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET
                op @ (b'q' | b'r' | b'h' | b'j') => {
                    let index = match op {
                        b'q' => u32::from(self.u8("BINPUT")?),
                        b'h' => u32::from(self.u8("BINGET")?),
                        b'r' => self.u32_le("LONG_BINPUT")?,
                        _ => self.u32_le("LONG_BINGET")?,
                    };
                    vm.memo_op(op, index).map_err(err)?;
                }
                b'c' => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    let global = global(module, name).map_err(err)?;
                    vm.stack.push(Slot::Value(Value::Global(global)));
                }
                op @ (b'R' | b'b' | b'Q') => vm.object_op(op).map_err(err)?,
                other => {
                    return Err(err(format!("unsupported opcode 0x{other:02x}")));
                }
            }
        }
    }

    /// The constant the opcode `op` (at offset `at`) pushes, read from its argument bytes.
    fn constant(&mut self, op: u8, at: usize) -> Result<Value, LegacyError> {
        Ok(match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            // BININT (signed 32-bit), BININT1, BININT2 (unsigned)
            b'J' => Value::Int(i128::from(self.u32_le("BININT")? as i32)),
            b'K' => Value::Int(i128::from(self.u8("BININT1")?)),
            b'M' => Value::Int(i128::from(self.u16_le("BININT2")?)),
            // LONG1: little-endian two's complement of n bytes
            0x8a => {
                let n = usize::from(self.u8("LONG1 length")?);
                if n > 16 {
                    return Err(LegacyError::Pickle {
                        offset: at,
                        message: format!("LONG1 of {n} bytes is too large"),
                    });
                }
                let b = self.take(n, "LONG1")?;
                let mut buf = [0u8; 16];
                buf[..n].copy_from_slice(b);
                if n > 0 && b[n - 1] & 0x80 != 0 {
                    buf[n..].fill(0xff);
                }
                Value::Int(i128::from_le_bytes(buf))
            }
            // BINFLOAT: big-endian f64
            b'G' => {
                let b = self.take(8, "BINFLOAT")?;
                Value::Float(f64::from_be_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            b'X' => {
                let n = self.u32_le("BINUNICODE length")? as usize;
                Value::Str(self.utf8(n, "BINUNICODE")?)
            }
            _ => {
                let n = usize::from(self.u8("SHORT_BINUNICODE length")?);
                Value::Str(self.utf8(n, "SHORT_BINUNICODE")?)
            }
        })
    }
}

/// The pickle VM's state over one pickle: its stack, its memo and how many values it has made
/// (memo copies count their whole weight), bounded by `MAX_VALUES`.
#[derive(Default)]
struct Vm {
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
    created: usize,
}

impl Vm {
    /// Counts `n` more values made.
    fn count(&mut self, n: usize) -> Result<(), String> {
        self.created = self.created.saturating_add(n);
        if self.created > MAX_VALUES {
            return Err(format!("more than {MAX_VALUES} values"));
        }
        Ok(())
    }

    /// STOP: the one value left on the stack.
    fn stop(&mut self) -> Result<Value, String> {
        let v = pop(&mut self.stack)?;
        if !self.stack.is_empty() {
            return Err("values left on the stack at STOP".into());
        }
        Ok(v)
    }

    /// The opcodes that build tuples, lists and dicts.
    fn structure(&mut self, op: u8) -> Result<(), String> {
        let stack = &mut self.stack;
        match op {
            b'(' => stack.push(Slot::Mark),
            b')' => stack.push(Slot::Value(Value::Tuple(Seq::new(Vec::new())?))),
            b't' => {
                let items = pop_mark(stack)?;
                stack.push(Slot::Value(Value::Tuple(Seq::new(items)?)));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(stack)?);
                }
                items.reverse();
                stack.push(Slot::Value(Value::Tuple(Seq::new(items)?)));
            }
            b']' => stack.push(Slot::Value(Value::List(Seq::new(Vec::new())?))),
            b'a' => {
                let v = pop(stack)?;
                match top(stack)? {
                    Value::List(l) => l.push(v)?,
                    other => return Err(format!("APPEND to a {}", other.kind())),
                }
            }
            b'e' => {
                let items = pop_mark(stack)?;
                match top(stack)? {
                    Value::List(l) => {
                        for v in items {
                            l.push(v)?;
                        }
                    }
                    other => return Err(format!("APPENDS to a {}", other.kind())),
                }
            }
            b'}' => stack.push(Slot::Value(Value::Dict(Seq::new(Vec::new())?))),
            b's' => {
                let v = pop(stack)?;
                let k = pop(stack)?;
                dict_set(top(stack)?, vec![k, v])?;
            }
            _ => {
                let items = pop_mark(stack)?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                dict_set(top(stack)?, items)?;
            }
        }
        Ok(())
    }

    /// PUT (`q`, `r`): the top of the stack into the memo at `index`; GET (`h`, `j`): back.
    fn memo_op(&mut self, op: u8, index: u32) -> Result<(), String> {
        if matches!(op, b'q' | b'r') {
            let v = match self.stack.last() {
                Some(Slot::Value(v)) => v.clone(),
                _ => return Err("PUT without a value on the stack".into()),
            };
            self.count(v.weight())?;
            self.memo.insert(index, v);
        } else {
            let v = self
                .memo
                .get(&index)
                .ok_or_else(|| format!("GET of unknown memo entry {index}"))?
                .clone();
            self.count(v.weight())?;
            self.stack.push(Slot::Value(v));
        }
        Ok(())
    }

    /// REDUCE (`R`) of a supported callable, BUILD (`b`) of a dict, BINPERSID (`Q`).
    fn object_op(&mut self, op: u8) -> Result<(), String> {
        let stack = &mut self.stack;
        match op {
            b'R' => {
                let args = match pop(stack)? {
                    Value::Tuple(a) => a.items,
                    other => return Err(format!("REDUCE arguments are a {}", other.kind())),
                };
                let v = match pop(stack)? {
                    Value::Global(Global::OrderedDict) if args.is_empty() => {
                        Value::Dict(Seq::new(Vec::new())?)
                    }
                    Value::Global(Global::RebuildTensorV2) => Value::Tensor(rebuild_tensor(args)?),
                    other => {
                        return Err(format!(
                            "REDUCE of unsupported callable (a {})",
                            other.kind()
                        ))
                    }
                };
                stack.push(Slot::Value(v));
            }
            // BUILD: the state of an OrderedDict (its `_metadata`) is ignored.
            b'b' => {
                let _state = pop(stack)?;
                match top(stack)? {
                    Value::Dict(_) => {}
                    other => return Err(format!("BUILD of a {}", other.kind())),
                }
            }
            _ => {
                let pid = pop(stack)?;
                stack.push(Slot::Value(Value::Storage(persistent_storage(pid)?)));
            }
        }
        Ok(())
    }
}

/// The callable or class GLOBAL names: only those a `state_dict` needs.
fn global(module: &str, name: &str) -> Result<Global, String> {
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch", class) => LegacyDtype::from_storage_class(class)
            .map(Global::StorageClass)
            .ok_or_else(|| format!("unsupported global torch.{class}")),
        (m, n) => Err(format!("unsupported global {m}.{n}")),
    }
}

fn pop(stack: &mut Vec<Slot>) -> Result<Value, String> {
    match stack.pop() {
        Some(Slot::Value(v)) => Ok(v),
        Some(Slot::Mark) => Err("unexpected MARK".into()),
        None => Err("stack underflow".into()),
    }
}

fn top(stack: &mut [Slot]) -> Result<&mut Value, String> {
    match stack.last_mut() {
        Some(Slot::Value(v)) => Ok(v),
        Some(Slot::Mark) => Err("unexpected MARK".into()),
        None => Err("stack underflow".into()),
    }
}

fn pop_mark(stack: &mut Vec<Slot>) -> Result<Vec<Value>, String> {
    let mark = stack
        .iter()
        .rposition(|s| matches!(s, Slot::Mark))
        .ok_or("no MARK on the stack")?;
    let items = stack
        .drain(mark + 1..)
        .map(|s| match s {
            Slot::Value(v) => v,
            Slot::Mark => Value::None, // unreachable: `mark` is the last MARK
        })
        .collect();
    stack.pop();
    Ok(items)
}

fn dict_set(target: &mut Value, items: Vec<Value>) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err(format!("SETITEM on a {}", target.kind()));
    };
    for v in items {
        d.push(v)?;
    }
    Ok(())
}

fn usize_of(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} out of range")),
        other => Err(format!("{what} is a {}, not an int", other.kind())),
    }
}

fn usizes_of(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) if t.items.len() <= MAX_RANK => {
            t.items.iter().map(|i| usize_of(i, what)).collect()
        }
        Value::Tuple(t) => Err(format!("{what} has rank {} > {MAX_RANK}", t.items.len())),
        other => Err(format!("{what} is a {}, not a tuple", other.kind())),
    }
}

/// `('storage', storage_class, key, location, numel, view_metadata)`.
fn persistent_storage(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(pid) = pid else {
        return Err(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    match pid.items.as_slice() {
        [Value::Str(tag), Value::Global(Global::StorageClass(dtype)), Value::Str(key), Value::Str(_location), numel, view] =>
        {
            if tag != "storage" {
                return Err(format!("persistent id of type {tag:?}"));
            }
            if *view != Value::None {
                return Err("storage views (view_metadata) are not supported".into());
            }
            Ok(StorageRef {
                key: key.clone(),
                dtype: *dtype,
                numel: usize_of(numel, "storage size")?,
            })
        }
        items => Err(format!(
            "unexpected persistent id ({})",
            items.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
fn rebuild_tensor(args: Vec<Value>) -> Result<TensorRef, String> {
    if !(6..=7).contains(&args.len()) {
        return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
    }
    let Value::Storage(storage) = &args[0] else {
        return Err(format!("_rebuild_tensor_v2 of a {}", args[0].kind()));
    };
    let offset = usize_of(&args[1], "storage offset")?;
    let shape = usizes_of(&args[2], "size")?;
    let stride = usizes_of(&args[3], "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    if !matches!(args[4], Value::Bool(_)) {
        return Err("requires_grad is not a bool".into());
    }
    match &args[5] {
        Value::Dict(hooks) if hooks.items.is_empty() => {}
        _ => return Err("backward hooks are not supported".into()),
    }
    if let Some(meta) = args.get(6) {
        if !matches!(meta, Value::None) && !matches!(meta, Value::Dict(d) if d.items.is_empty()) {
            return Err("tensor metadata is not supported".into());
        }
    }
    Ok(TensorRef {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long1_sign_extension() {
        let mut r = Reader {
            bytes: &[0x80, 2, 0x8a, 1, 0xff, b'.'],
            pos: 0,
        };
        assert_eq!(r.pickle().ok(), Some(Value::Int(-1)));
        let mut r = Reader {
            bytes: &[0x8a, 0, b'.'],
            pos: 0,
        };
        assert_eq!(r.pickle().ok(), Some(Value::Int(0)));
    }

    #[test]
    fn hostile_pickles_are_rejected_quickly() {
        // 10,000 nested 1-tuples: rejected at depth MAX_DEPTH, no deep recursion.
        let mut deep = vec![b')'];
        deep.extend(vec![0x85u8; 10_000]);
        deep.push(b'.');
        let e = Reader {
            bytes: &deep,
            pos: 0,
        }
        .pickle()
        .unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        // Doubling through the memo 60 times (2^60 values if copied): bounded by MAX_VALUES.
        let mut bomb = vec![b')', b'q', 0];
        for _ in 0..60 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        let e = Reader {
            bytes: &bomb,
            pos: 0,
        }
        .pickle()
        .unwrap_err();
        assert!(e.to_string().contains("values"), "{e}");
    }

    #[test]
    fn mark_errors() {
        for bytes in [&b"(."[..], b"t.", b"0", b"q\x00.", b"h\x05.", b"N(s."] {
            let mut r = Reader { bytes, pos: 0 };
            assert!(r.pickle().is_err(), "{bytes:?}");
        }
    }
}
