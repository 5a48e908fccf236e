//! Dequantizing GGML tensor data to `f32`.
//!
//! Block layouts (ggml's `ggml-common.h`), 32 values per block:
//! - `Q4_0`: f16 scale `d`, 16 bytes of nibbles; `x = d * (q - 8)`.
//! - `Q4_1`: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles; `x = d * q + m`.
//! - `Q8_0`: f16 scale `d`, 32 signed bytes; `x = d * q`.
//!
//! In the 4-bit formats byte `j` of the 16 holds value `j` in its low nibble and value `j + 16`
//! in its high nibble.

use crate::gguf::GgmlType;
use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `bytes` of type `ty` into `out` (whose length is the element count).
///
/// Returns `None` when `ty` is not decodable or the lengths disagree; the GGUF reader has
/// already checked sizes for tensors it hands out, so callers turn this into their own error.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Option<()> {
    let (block_elems, block_bytes) = ty.block_layout()?;
    let (block_elems, block_bytes) = (block_elems as usize, block_bytes as usize);
    if !out.len().is_multiple_of(block_elems)
        || bytes.len() != out.len() / block_elems * block_bytes
    {
        return None;
    }
    let blocks = bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block_elems));
    match ty {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_at(b, 0);
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = d * (f32::from(q & 0x0f) - 8.0);
                    o[j + 16] = d * (f32::from(q >> 4) - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = d * f32::from(q & 0x0f) + m;
                    o[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    o[j] = d * f32::from(b[2 + j] as i8);
                }
            }
        }
        GgmlType::Other(_) => return None,
    }
    Some(())
}

/// Encodes `values` (a multiple of 32) as `Q8_0`, for tests and the synthetic model.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
    }
    out
}

/// Encodes `values` (a multiple of 32) as `Q4_1`, for tests and the synthetic model.
pub fn quantize_q4_1(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 20);
    for block in values.chunks(32) {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        let q = |v: f32| (((v - min) * inv).round() as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(block[j]) | (q(block[j + 16]) << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_hand_computed_block() {
        // d = 0.5, m = -1.0; low nibbles 0..15, high nibbles 15..0.
        let mut b = Vec::new();
        b.extend_from_slice(&h(0.5));
        b.extend_from_slice(&h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], -1.0); // 0.5 * 0 - 1
        assert_eq!(out[3], 0.5); // 0.5 * 3 - 1
        assert_eq!(out[15], 6.5); // 0.5 * 15 - 1
        assert_eq!(out[16], 6.5); // high nibble of byte 0 is 15
        assert_eq!(out[31], -1.0); // high nibble of byte 15 is 0
    }

    #[test]
    fn q4_0_hand_computed_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&h(2.0));
        for j in 0..16u8 {
            b.push(j | (8 << 4));
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -16.0); // 2 * (0 - 8)
        assert_eq!(out[8], 0.0);
        assert_eq!(out[15], 14.0); // 2 * (15 - 8)
        assert!(out[16..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q8_0_hand_computed_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&h(0.25));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 0.0);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn f16_and_f32() {
        let mut out = [0f32; 2];
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0]);
        let b: Vec<u8> = h(0.125).into_iter().chain(h(-3.0)).collect();
        dequantize(GgmlType::F16, &b, &mut out).unwrap();
        assert_eq!(out, [0.125, -3.0]);
    }

    #[test]
    fn encoders_round_trip_within_one_step() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.3)
            .collect();
        let mut out = vec![0f32; 64];
        dequantize(GgmlType::Q8_0, &quantize_q8_0(&values), &mut out).unwrap();
        for (a, b) in values.iter().zip(&out) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        dequantize(GgmlType::Q4_1, &quantize_q4_1(&values), &mut out).unwrap();
        for (a, b) in values.iter().zip(&out) {
            assert!((a - b).abs() < 0.12, "{a} vs {b}");
        }
    }

    #[test]
    fn length_mismatch_is_refused() {
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_1, &[0u8; 19], &mut out).is_none());
        assert!(dequantize(GgmlType::Other(99), &[], &mut []).is_none());
    }
}
