//! The safetensors container, as far as adapters need it: an 8-byte little-endian header
//! length, a JSON header mapping each tensor's name to its `dtype`, `shape` and
//! `data_offsets` (from the end of the header), then the data.

use std::path::Path;

/// A tensor read from a file: name, shape, values as f32.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Every tensor of the safetensors file at `path`, converted to f32 (F32, F16 and BF16 data;
/// any other dtype is an error naming the tensor). Errors name what is wrong and where.
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<Vec<NamedTensor>, String> {
    let not = |why: &str| format!("not a safetensors file ({why})");
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| not("shorter than its 8-byte header length"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| not("header length beyond the end of the file"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| not(&format!("header: {e}")))?;
    let data = &bytes[end..];
    let mut out = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let field = |k: &str| info.get(k).ok_or(format!("tensor {name}: no {k}"));
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_owned();
        let list = |k: &str| {
            field(k)?
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                        .collect::<Option<Vec<usize>>>()
                })
                .ok_or(format!(
                    "tensor {name}: {k} is not a list of non-negative integers"
                ))
        };
        let shape = list("shape")?;
        let offsets = list("data_offsets")?;
        let width = match dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => {
                return Err(format!(
                    "tensor {name}: dtype {other:?} (valid: F32, F16, BF16)"
                ));
            }
        };
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = count.and_then(|c| c.checked_mul(width));
        let raw = match offsets[..] {
            [a, b] if a <= b && b <= data.len() && Some(b - a) == bytes => &data[a..b],
            _ => {
                return Err(format!(
                    "tensor {name}: data_offsets {offsets:?} do not hold its shape {shape:?} of \
                     {dtype} values within the {} data bytes",
                    data.len()
                ));
            }
        };
        let values = match dtype.as_str() {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        out.push((name, shape, values));
    }
    Ok(out)
}

/// Writes `tensors` as an F32 safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<(), String> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // The data starts 8-byte aligned, as the format recommends.
    while !(head.len() + 8).is_multiple_of(8) {
        head.push(b' ');
    }
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_bad_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("socbench-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let t = vec![
            (
                "x".to_string(),
                vec![2, 3],
                vec![1.0, -2.0, 3.5, 0.0, 5.0, 6.0],
            ),
            ("y".to_string(), vec![1], vec![7.25]),
        ];
        write_safetensors(&path, &t).unwrap();
        let mut back = read_safetensors(&path).unwrap();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, t);
        // Truncated data and a header longer than the file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_safetensors(&path).unwrap_err();
        assert!(
            e.contains("a.safetensors") && e.contains("data_offsets"),
            "{e}"
        );
        // A negative dimension is named, not dropped from the shape.
        let header = br#"{"x":{"dtype":"F32","shape":[-1,3],"data_offsets":[0,12]}}"#;
        let mut bad = (header.len() as u64).to_le_bytes().to_vec();
        bad.extend_from_slice(header);
        bad.extend_from_slice(&[0; 12]);
        std::fs::write(&path, &bad).unwrap();
        let e = read_safetensors(&path).unwrap_err();
        assert!(
            e.contains("a.safetensors") && e.contains("tensor x: shape is not a list"),
            "{e}"
        );
        std::fs::write(&path, [255u8; 12]).unwrap();
        let e = read_safetensors(&path).unwrap_err();
        assert!(e.contains("not a safetensors file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
