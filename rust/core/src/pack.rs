//! Turning documents' token ids into MDS samples: fixed-length packing for pretraining, one
//! prompt-masked sample per example for SFT.

use crate::error::Result;
use crate::mds::{ColumnValue, Dtype, MdsWriter};

/// Token dtype for a vocabulary: uint16 when every id fits, else uint32.
pub fn token_dtype(vocab_size: u64) -> Dtype {
    if vocab_size <= 1 << 16 {
        Dtype::U16
    } else {
        Dtype::U32
    }
}

pub fn ids_to_bytes(ids: &[u32], dtype: Dtype, out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        Dtype::U16 => out.extend(ids.iter().flat_map(|&t| (t as u16).to_le_bytes())),
        _ => out.extend(ids.iter().flat_map(|&t| t.to_le_bytes())),
    }
}

pub fn bytes_to_ids(bytes: &[u8], dtype: Dtype) -> Vec<u32> {
    match dtype {
        Dtype::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Concatenates token streams and writes every full `seq_len` window as one `tokens` sample.
pub struct Packer {
    seq_len: usize,
    dtype: Dtype,
    buf: Vec<u32>,
    bytes: Vec<u8>,
    pub samples: u64,
}

impl Packer {
    pub fn new(seq_len: usize, dtype: Dtype) -> Packer {
        Packer {
            seq_len,
            dtype,
            buf: Vec::with_capacity(seq_len * 2),
            bytes: Vec::new(),
            samples: 0,
        }
    }

    pub fn push(&mut self, ids: &[u32], writer: &mut MdsWriter) -> Result<()> {
        self.buf.extend_from_slice(ids);
        if self.buf.len() < self.seq_len {
            return Ok(());
        }
        let mut start = 0;
        while self.buf.len() - start >= self.seq_len {
            ids_to_bytes(
                &self.buf[start..start + self.seq_len],
                self.dtype,
                &mut self.bytes,
            );
            writer.write(&[ColumnValue::Raw(&self.bytes)])?;
            self.samples += 1;
            start += self.seq_len;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// The ids after the last full sample.
    pub fn tail(&self) -> &[u32] {
        &self.buf
    }
}

/// What happened to one SFT example.
pub struct SftSample {
    pub input_ids: Vec<u32>,
    /// `-100` over the prompt when masking, else equal to the ids.
    pub labels: Vec<i32>,
    pub truncated_tokens: usize,
}

/// prompt + response + EOS (after an optional BOS), cut to `seq_len`. Prompt and response are
/// tokenized separately so the mask boundary is exact. `None` when masking leaves no label.
pub fn sft_sample(
    bos: Option<u32>,
    prompt: &[u32],
    response: &[u32],
    eos: Option<u32>,
    seq_len: usize,
    mask_prompt: bool,
) -> Option<SftSample> {
    let mut ids: Vec<u32> = Vec::with_capacity(prompt.len() + response.len() + 2);
    ids.extend(bos);
    ids.extend_from_slice(prompt);
    let prompt_len = ids.len();
    ids.extend_from_slice(response);
    ids.extend(eos);
    let truncated_tokens = ids.len().saturating_sub(seq_len);
    ids.truncate(seq_len);
    let labels: Vec<i32> = ids
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if mask_prompt && i < prompt_len {
                -100
            } else {
                t as i32
            }
        })
        .collect();
    if ids.is_empty() || (mask_prompt && prompt_len >= ids.len()) {
        return None;
    }
    Some(SftSample {
        input_ids: ids,
        labels,
        truncated_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sft_masks_prompt_and_truncates() {
        let s = sft_sample(None, &[1, 2, 3], &[4, 5], Some(0), 5, true).unwrap();
        assert_eq!(s.input_ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(s.labels, vec![-100, -100, -100, 4, 5]);
        assert_eq!(s.truncated_tokens, 1);
        let s = sft_sample(Some(9), &[1], &[4], Some(0), 10, false).unwrap();
        assert_eq!(s.labels, vec![9, 1, 4, 0]);
        assert!(sft_sample(None, &[1, 2, 3], &[4], Some(0), 3, true).is_none());
    }

    #[test]
    fn dtype_by_vocab() {
        assert_eq!(token_dtype(50277), Dtype::U16);
        assert_eq!(token_dtype(65536), Dtype::U16);
        assert_eq!(token_dtype(65537), Dtype::U32);
    }
}
