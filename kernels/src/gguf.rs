//! Reading GGUF files: header, metadata and tensor directory.
//!
//! GGUF (versions 2 and 3) is a little-endian container: a header, `kv_count` typed metadata
//! entries, `tensor_count` tensor descriptors, then the tensor data, aligned to
//! `general.alignment` (32 by default).
//!
//! We parse it ourselves rather than through a container crate because every malformed input
//! must come back as an error naming what was wrong and where: `ggus` 0.5 slices its data
//! section without a bounds check, so a file truncated inside the tensor data panics there.
//! Every read here is bounds-checked, and no count read from the file allocates before the
//! bytes it promises are known to exist.

use crate::mapped::FileBytes;
use std::collections::BTreeMap;
use std::path::Path;

/// The four magic bytes a GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// What can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found:?}, a GGUF file starts with \"GGUF\"")]
    BadMagic {
        /// The first bytes found.
        found: String,
    },
    /// A GGUF version this reader does not understand.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends before a structure it announces.
    #[error(
        "file is truncated: {what} needs {needed} bytes at offset {offset}, the file has {len}"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Offset where it starts.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// File length.
        len: u64,
    },
    /// A metadata value of an unknown type.
    #[error("metadata key {key:?} has unknown value type {ty} (valid: 0..=12)")]
    BadValueType {
        /// Metadata key.
        key: String,
        /// Type code found.
        ty: u32,
    },
    /// A string that is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    Utf8 {
        /// What was being read.
        what: String,
        /// Offset of the string.
        offset: u64,
    },
    /// A required metadata key is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// Metadata key.
        key: String,
    },
    /// A metadata key holds a value of the wrong type.
    #[error("metadata key {key:?} should be {expected}, found {found}")]
    WrongType {
        /// Metadata key.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A tensor whose data lies outside the file or whose size is inconsistent.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`] (a hostile file would exhaust the stack).
    #[error(
        "metadata key {key:?}: arrays nested more than {MAX_ARRAY_DEPTH} deep (GGUF files nest \
         one level; this file is damaged or hostile)"
    )]
    TooDeep {
        /// Metadata key.
        key: String,
    },
    /// A tensor the model needs is absent.
    #[error("tensor {name:?} is missing from the file")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },
}

/// How deeply metadata arrays may nest. GGUF files in use nest one level (arrays of strings or
/// numbers); the bound keeps a hostile file from recursing until the stack overflows.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `f32` or `f64`.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::U64(_) => "an unsigned integer",
            Value::I64(_) => "a signed integer",
            Value::F64(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
        }
    }
}

/// GGML tensor element types: the five socbench packs from or reads most by name, every other
/// code as [`GgmlType::Other`]. Every type ggml defines is sized ([`GgmlType::block_layout`])
/// and named, so that a file of any type can be read, checked and identified; the named five
/// and some others (Q5_0, Q5_1, Q2_K to Q6_K, BF16) can be decoded ([`GgmlType::decodable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with an f16 scale and an f16 minimum.
    Q4_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// Any other code: sized and named when ggml defines it (K-quants, I-quants, BF16 …);
    /// [`crate::dequant`] decodes some of them.
    Other(u32),
}

/// The types ggml defines beyond the five named ones: code, name (as llama.cpp's tools
/// print it), elements per block, bytes per block. From ggml's `ggml_type` and its block
/// structs; `llama_cpp_agrees_on_every_ggml_type` checks it against the linked ggml.
const OTHER_TYPES: &[(u32, &str, u64, u64)] = &[
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    /// The type of a GGUF type code.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            other => Self::Other(other),
        }
    }

    /// The GGUF type code.
    pub fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Other(code) => code,
        }
    }

    fn other(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        let code = self.code();
        OTHER_TYPES.iter().find(|t| t.0 == code)
    }

    /// (elements per block, bytes per block), or `None` for a code ggml does not define.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 => Some((1, 2)),
            Self::Q4_0 => Some((32, 18)),
            Self::Q4_1 => Some((32, 20)),
            Self::Q8_0 => Some((32, 34)),
            Self::Other(_) => self.other().map(|t| (t.2, t.3)),
        }
    }

    /// Whether socbench can decode this type (F32, F16, Q4_0, Q4_1, Q8_0, and Q5_0, Q5_1,
    /// Q2_K to Q6_K and BF16).
    pub fn decodable(self) -> bool {
        match self {
            Self::Other(code) => crate::dequant::decoder(code).is_some(),
            _ => true,
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => f.write_str("F32"),
            Self::F16 => f.write_str("F16"),
            Self::Q4_0 => f.write_str("Q4_0"),
            Self::Q4_1 => f.write_str("Q4_1"),
            Self::Q8_0 => f.write_str("Q8_0"),
            Self::Other(code) => match self.other() {
                Some(t) => f.write_str(t.1),
                None => write!(f, "ggml type {code}"),
            },
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions as GGUF lists them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file: metadata and tensor directory parsed, tensor data mapped from disk
/// (or held in memory, for bytes given to [`GgufFile::parse`]).
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: FileBytes,
    data_start: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.bytes.len() as u64 => {
                let slice = &self.bytes[self.pos..end as usize];
                self.pos = end as usize;
                Ok(slice)
            }
            _ => Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let slice = self.take(N as u64, || what.to_string())?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos as u64;
        let raw = self.take(len, || what.to_string())?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::Utf8 {
            what: what.to_string(),
            offset,
        })
    }

    fn value(&mut self, key: &str, ty: u32) -> Result<Value, GgufError> {
        self.value_at(key, ty, 0)
    }

    /// A value inside `depth` enclosing arrays.
    fn value_at(&mut self, key: &str, ty: u32, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            0 => Value::U64(u64::from(self.take(1, what)?[0])),
            1 => Value::I64(i64::from(self.take(1, what)?[0] as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.array(&what())?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.array(&what())?))),
            4 => Value::U64(u64::from(u32::from_le_bytes(self.array(&what())?))),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.array(&what())?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.array(&what())?))),
            7 => Value::Bool(self.take(1, what)?[0] != 0),
            8 => Value::String(self.string(&what())?),
            9 if depth >= MAX_ARRAY_DEPTH => {
                return Err(GgufError::TooDeep {
                    key: key.to_string(),
                });
            }
            9 => {
                let elem_ty = self.u32(&what())?;
                let count = self.u64(&what())?;
                // Every element takes at least one byte: a count larger than what is left is a
                // truncated (or hostile) file, caught before allocating for it.
                let left = (self.bytes.len() - self.pos) as u64;
                if count > left {
                    return Err(GgufError::Truncated {
                        what: format!("array of {count} elements in metadata key {key:?}"),
                        offset: self.pos as u64,
                        needed: count,
                        len: self.bytes.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value_at(key, elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            other => {
                return Err(GgufError::BadValueType {
                    key: key.to_string(),
                    ty: other,
                });
            }
        })
    }
}

impl GgufFile {
    /// Maps and parses a GGUF file. Only the header is read here; tensor data is read when
    /// [`GgufFile::tensor_bytes`] is, and can be let go with [`GgufFile::release`].
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        Self::parse_bytes(FileBytes::map(&file).map_err(io)?)
    }

    /// Parses GGUF bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse_bytes(FileBytes::Owned(bytes))
    }

    fn parse_bytes(bytes: FileBytes) -> Result<Self, GgufError> {
        let mut cur = Cursor {
            bytes: bytes.as_slice(),
            pos: 0,
        };
        let magic: [u8; 4] = cur.array("the magic number")?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = cur.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = cur.u64("the tensor count")?;
        let kv_count = cur.u64("the metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let ty = cur.u32(&format!("type of metadata key {key:?}"))?;
            let value = cur.value(&key, ty)?;
            metadata.insert(key, value);
        }

        let mut tensors = Vec::new();
        for i in 0..tensor_count {
            let name = cur.string(&format!("name of tensor #{i}"))?;
            let n_dims = cur.u32(&format!("rank of tensor {name:?}"))?;
            if n_dims > 8 {
                return Err(GgufError::BadTensor {
                    name,
                    reason: format!("rank {n_dims} is larger than GGUF allows (at most 8)"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cur.u64(&format!("dimensions of tensor {name:?}"))?);
            }
            let ty = GgmlType::from_code(cur.u32(&format!("type of tensor {name:?}"))?);
            let offset = cur.u64(&format!("offset of tensor {name:?}"))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }

        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(Value::U64(a)) if *a > 0 && *a <= 1 << 20 => *a as usize,
            Some(other) => {
                return Err(GgufError::WrongType {
                    key: "general.alignment".into(),
                    expected: "a positive integer up to 1 MiB",
                    found: other.kind(),
                });
            }
        };
        let data_start = cur.pos.div_ceil(alignment) * alignment;
        let file = Self {
            version,
            metadata,
            tensors,
            data_start,
            bytes,
        };
        for info in &file.tensors {
            file.tensor_range(info)?;
        }
        Ok(file)
    }

    fn tensor_range(&self, info: &TensorInfo) -> Result<std::ops::Range<usize>, GgufError> {
        let bad = |reason: String| GgufError::BadTensor {
            name: info.name.clone(),
            reason,
        };
        let Some((block_elems, block_bytes)) = info.ty.block_layout() else {
            return Err(bad(format!(
                "{} is not a type ggml defines (a newer file, or a damaged one)",
                info.ty
            )));
        };
        let elements = info
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", info.dims)))?;
        // Blocks run along a row (the first dimension), never across rows: ggml refuses a
        // row that is not whole blocks, and so does this reader (a decoder would otherwise read
        // blocks spanning two rows).
        let row = info.dims.first().copied().unwrap_or(1);
        if elements % block_elems != 0 || row % block_elems != 0 {
            return Err(bad(format!(
                "rows of {row} elements are not whole {} blocks of {block_elems}",
                info.ty
            )));
        }
        let nbytes = elements / block_elems * block_bytes;
        let start = (self.data_start as u64)
            .checked_add(info.offset)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let end = start
            .checked_add(nbytes)
            .ok_or_else(|| bad("size overflows".into()))?;
        if end > self.bytes.as_slice().len() as u64 {
            return Err(GgufError::Truncated {
                what: format!("data of tensor {:?} ({})", info.name, info.ty),
                offset: start,
                needed: nbytes,
                len: self.bytes.as_slice().len() as u64,
            });
        }
        Ok(start as usize..end as usize)
    }

    /// Looks up a tensor by name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::MissingTensor { name: name.into() })
    }

    /// The raw bytes of a tensor's data, of any type (decoding is the reader's business:
    /// [`GgmlType::decodable`]).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        Ok(&self.bytes.as_slice()[self.tensor_range(info)?])
    }

    /// Maps the pages of `info`'s data in before it is read (one call instead of a page fault
    /// per page; a hint, without effect on bytes held in memory).
    pub fn populate(&self, info: &TensorInfo) {
        if let Ok(range) = self.tensor_range(info) {
            self.bytes.populate(range);
        }
    }

    /// Lets the pages of `info`'s data leave the process's resident memory once the loader
    /// has converted the tensor (a mapped file; a later read maps them back in).
    pub fn release(&self, info: &TensorInfo) {
        if let Ok(range) = self.tensor_range(info) {
            self.bytes.release(range);
        }
    }

    /// Total size of all tensor data in bytes.
    pub fn tensor_data_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(|t| self.tensor_range(t).ok().map(|r| r.len() as u64))
            .sum()
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Result<&Value, GgufError> {
        self.metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey { key: key.into() })
    }

    /// A metadata value that must be a non-negative integer.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        match self.get(key)? {
            Value::U64(v) => Ok(*v as usize),
            Value::I64(v) if *v >= 0 => Ok(*v as usize),
            other => Err(GgufError::WrongType {
                key: key.into(),
                expected: "a non-negative integer",
                found: other.kind(),
            }),
        }
    }

    /// A metadata value that must be a number.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        match self.get(key)? {
            Value::F64(v) => Ok(*v),
            Value::U64(v) => Ok(*v as f64),
            Value::I64(v) => Ok(*v as f64),
            other => Err(GgufError::WrongType {
                key: key.into(),
                expected: "a number",
                found: other.kind(),
            }),
        }
    }

    /// A metadata value that must be a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(GgufError::WrongType {
                key: key.into(),
                expected: "a string",
                found: other.kind(),
            }),
        }
    }

    /// A metadata value that must be an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let wrong = |found| GgufError::WrongType {
            key: key.into(),
            expected: "an array of strings",
            found,
        };
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(wrong(other.kind())),
                })
                .collect(),
            other => Err(wrong(other.kind())),
        }
    }

    /// A metadata value that must be an array of integers.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let wrong = |found| GgufError::WrongType {
            key: key.into(),
            expected: "an array of integers",
            found,
        };
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::I64(i) => Ok(*i),
                    Value::U64(u) => Ok(*u as i64),
                    other => Err(wrong(other.kind())),
                })
                .collect(),
            other => Err(wrong(other.kind())),
        }
    }
}

/// Builds GGUF bytes, for tests and for writing the synthetic model.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl GgufWriter {
    /// Adds a `u32` metadata entry.
    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.metadata
            .push((key.into(), 4, v.to_le_bytes().to_vec()));
        self
    }

    /// Adds an `f32` metadata entry.
    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.metadata
            .push((key.into(), 6, v.to_le_bytes().to_vec()));
        self
    }

    /// Adds a string metadata entry.
    pub fn string(&mut self, key: &str, v: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, v);
        self.metadata.push((key.into(), 8, b));
        self
    }

    /// Adds an array-of-strings metadata entry.
    pub fn strings(&mut self, key: &str, items: &[&str]) -> &mut Self {
        let mut b = Vec::new();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut b, s);
        }
        self.metadata.push((key.into(), 9, b));
        self
    }

    /// Adds an array-of-i32 metadata entry.
    pub fn i32s(&mut self, key: &str, items: &[i32]) -> &mut Self {
        let mut b = Vec::new();
        b.extend_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for v in items {
            b.extend_from_slice(&v.to_le_bytes());
        }
        self.metadata.push((key.into(), 9, b));
        self
    }

    /// Adds an F32 tensor (`dims` innermost first, as GGUF lists them).
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((name.into(), dims.to_vec(), 0, bytes));
        self
    }

    /// Adds a tensor with raw, already-encoded data of ggml type `ty`.
    pub fn tensor_raw(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    /// Serialises to GGUF version 3 with 32-byte alignment.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, ty, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(32) * 32;
        }
        let start = out.len().div_ceil(32) * 32;
        out.resize(start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::default();
        w.string("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .strings("tokenizer.ggml.tokens", &["a", "b"])
            .tensor_f32("x", &[2, 3], &[0., 1., 2., 3., 4., 5.])
            .tensor_f32("y", &[4], &[9., 8., 7., 6.]);
        w.to_bytes()
    }

    #[test]
    fn parses_what_the_writer_wrote() {
        let f = GgufFile::parse(sample()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.get_usize("llama.block_count").unwrap(), 2);
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap(),
            ["a", "b"]
        );
        let y = f.tensor("y").unwrap();
        assert_eq!(y.dims, [4]);
        let bytes = f.tensor_bytes(y).unwrap();
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), 8.0);
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let mut b = sample();
        b[..4].copy_from_slice(b"GGML");
        let err = GgufFile::parse(b).unwrap_err();
        assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
        assert!(err.to_string().contains("GGML"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for cut in 0..full.len() {
            // The last tensor's padding is not data: only cuts into real bytes must fail.
            let r = GgufFile::parse(full[..cut].to_vec());
            assert!(r.is_err(), "cut at {cut} of {} parsed", full.len());
        }
        assert!(GgufFile::parse(full).is_ok());
    }

    /// A GGUF v3 header with no tensors and one metadata key `k` of type array, up to the
    /// array's element type.
    fn one_array_key() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut b, "k");
        b.extend_from_slice(&9u32.to_le_bytes());
        b
    }

    #[test]
    fn huge_array_count_is_truncation_not_allocation() {
        let mut b = one_array_key();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = GgufFile::parse(b).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    }

    #[test]
    fn deeply_nested_arrays_are_one_error_not_a_stack_overflow() {
        let nested = |levels: usize| {
            let mut b = one_array_key();
            // `levels` arrays of one array each, then one array of no u32.
            for _ in 1..levels {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&1u64.to_le_bytes());
            }
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
            b
        };
        // A million levels in 12 MB: without the bound this overflows the stack.
        let err = GgufFile::parse(nested(1_000_000)).unwrap_err();
        assert!(matches!(err, GgufError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains("\"k\""), "{err}");
        assert!(GgufFile::parse(nested(MAX_ARRAY_DEPTH)).is_ok());
        assert!(GgufFile::parse(nested(MAX_ARRAY_DEPTH + 1)).is_err());
    }

    #[test]
    fn wrong_types_name_the_key() {
        let f = GgufFile::parse(sample()).unwrap();
        let err = f.get_usize("general.architecture").unwrap_err();
        assert!(err.to_string().contains("general.architecture"), "{err}");
        let err = f.get_str("nope").unwrap_err();
        assert!(matches!(err, GgufError::MissingKey { .. }));
    }

    #[test]
    fn unsupported_version() {
        let mut b = sample();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            GgufFile::parse(b),
            Err(GgufError::UnsupportedVersion(1))
        ));
    }

    /// A tensor of any type ggml defines (Q6_K here) is sized, checked and handed out as
    /// bytes, decoded or not (IQ2_XXS is not); a truncated one is an error naming it; a code
    /// ggml does not define is an error naming the tensor when the file is opened.
    #[test]
    fn every_ggml_type_is_sized_and_checked() {
        let q6_k = GgmlType::from_code(14);
        assert_eq!(
            (q6_k.to_string(), q6_k.block_layout()),
            ("Q6_K".into(), Some((256, 210)))
        );
        let iq2_xxs = GgmlType::from_code(16);
        assert_eq!(iq2_xxs.to_string(), "IQ2_XXS");
        assert!(q6_k.decodable() && GgmlType::Q4_1.decodable() && !iq2_xxs.decodable());
        let file = |code: u32, len: usize| {
            let mut w = GgufWriter::default();
            w.string("general.architecture", "qwen3").tensor_raw(
                "w",
                &[256, 2],
                code,
                vec![7; len],
            );
            GgufFile::parse(w.to_bytes())
        };
        let f = file(14, 420).unwrap();
        let w = f.tensor("w").unwrap();
        assert_eq!(f.tensor_bytes(w).unwrap(), &[7; 420][..]);
        assert_eq!(f.tensor_data_bytes(), 420);
        let err = file(14, 419).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("\"w\" (Q6_K)"), "{err}");
        // 512 elements are two Q6_K blocks, but rows of 128 are not whole blocks.
        let mut w = GgufWriter::default();
        w.string("general.architecture", "qwen3")
            .tensor_raw("w", &[128, 4], 14, vec![7; 420]);
        let err = GgufFile::parse(w.to_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("\"w\"")
                && err.contains("rows of 128 elements are not whole Q6_K blocks of 256"),
            "{err}"
        );
        let err = file(4, 420).unwrap_err().to_string();
        assert!(
            err.contains("\"w\"") && err.contains("ggml type 4"),
            "{err}"
        );
    }
}
