//! What differs between pretraining and SFT preparation (`ModePipeline`): the fields read, the
//! columns written, and how one record's token ids become samples.

use super::{Mode, PrepareOptions};
use crate::error::{Error, Result};
use crate::input::{Format, InputFile};
use crate::manifest::{Counts, SftInfo};
use crate::mds::{ColumnValue, Dtype, MdsWriter};
use crate::pack::{self, Packer};
use crate::record::SkipReason;

/// The token ids every mode wraps documents in, and the dtype it stores ids as.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tokens {
    pub eos: Option<u32>,
    pub bos: Option<u32>,
    pub dtype: Dtype,
}

impl Tokens {
    /// Add to `counts.special_in_text` the tokens of `text` that are the EOS or BOS id.
    fn count_in_text(&self, text: &[u32], counts: &mut Counts) {
        if let Some(n) = counts.special_in_text.as_mut() {
            *n += text
                .iter()
                .filter(|&&t| Some(t) == self.eos || Some(t) == self.bos)
                .count() as u64;
        }
    }
}

/// What became of one record's token ids.
pub(super) enum Pushed {
    Written,
    /// The mode cannot use it; `--on-bad-record` decides between an error and a skip.
    Rejected(SkipReason, String),
}

/// Everything that differs between pretraining and SFT preparation. `prepare` drives one of
/// these through the same reading, encoding and writing steps.
pub(super) trait ModePipeline: Send {
    /// Record fields to extract and tokenize, in order.
    fn fields(&self) -> Vec<String>;
    /// `.txt` inputs: one document per line instead of one per file.
    fn text_per_line(&self) -> bool;
    /// Refuse inputs the mode cannot read before any work starts.
    fn check_inputs(&self, files: &[InputFile]) -> Result<()>;
    /// The output columns, (name, MDS encoding).
    fn columns(&self) -> Vec<(String, String)>;
    /// Turn one record's token ids (one list per field) into samples.
    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed>;
    /// Fill the sample and token counts once every record is in. A task part keeps its tail
    /// for `merge` instead of dropping it.
    fn finish_counts(&self, counts: &mut Counts, writer: &MdsWriter, is_task: bool);
    /// Tokens after the last full sample (kept in a task part's report).
    fn tail(&self) -> Vec<u32>;
    /// `text_field` and `sft` in the report.
    fn text_field(&self) -> Option<String>;
    fn sft(&self) -> Option<SftInfo>;
}

/// Pretraining: documents are wrapped in BOS/EOS and packed into fixed `seq_len` windows.
struct Pretrain {
    text_field: String,
    text_per_line: bool,
    seq_len: usize,
    tokens: Tokens,
    packer: Packer,
}

impl ModePipeline for Pretrain {
    fn fields(&self) -> Vec<String> {
        vec![self.text_field.clone()]
    }

    fn text_per_line(&self) -> bool {
        self.text_per_line
    }

    fn check_inputs(&self, _files: &[InputFile]) -> Result<()> {
        Ok(())
    }

    fn columns(&self) -> Vec<(String, String)> {
        vec![(
            "tokens".into(),
            format!("ndarray:{}:{}", self.tokens.dtype.name(), self.seq_len),
        )]
    }

    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed> {
        self.tokens.count_in_text(&parts[0], counts);
        let mut doc: Vec<u32> = Vec::with_capacity(parts[0].len() + 2);
        doc.extend(self.tokens.bos);
        doc.extend_from_slice(&parts[0]);
        doc.extend(self.tokens.eos);
        counts.document_tokens += doc.len() as u64;
        self.packer.push(&doc, writer)?;
        Ok(Pushed::Written)
    }

    fn finish_counts(&self, counts: &mut Counts, _writer: &MdsWriter, is_task: bool) {
        counts.samples = self.packer.samples;
        counts.tokens = self.packer.samples * self.seq_len as u64;
        counts.dropped_tail_tokens = if is_task {
            0
        } else {
            self.packer.tail().len() as u64
        };
    }

    fn tail(&self) -> Vec<u32> {
        self.packer.tail().to_vec()
    }

    fn text_field(&self) -> Option<String> {
        Some(self.text_field.clone())
    }

    fn sft(&self) -> Option<SftInfo> {
        None
    }
}

/// SFT: one sample per (prompt, response) example, labels masked over the prompt. An empty
/// `prompt_field` reads no prompt: every example is its response alone (a plain document run
/// through an empty prompt template, as the paper scores its held-out C4 text during SFT).
struct Sft {
    info: SftInfo,
    seq_len: usize,
    tokens: Tokens,
    // Reused buffers for one sample's columns.
    ids_bytes: Vec<u8>,
    label_bytes: Vec<u8>,
}

impl ModePipeline for Sft {
    fn fields(&self) -> Vec<String> {
        if self.info.prompt_field.is_empty() {
            return vec![self.info.response_field.clone()];
        }
        vec![
            self.info.prompt_field.clone(),
            self.info.response_field.clone(),
        ]
    }

    fn text_per_line(&self) -> bool {
        false
    }

    fn check_inputs(&self, files: &[InputFile]) -> Result<()> {
        match files.iter().find(|f| matches!(f.format, Format::Text(_))) {
            Some(f) => Err(Error::Config(format!(
                "{}: SFT mode needs prompt and response fields; .txt inputs have none",
                f.label
            ))),
            None => Ok(()),
        }
    }

    fn columns(&self) -> Vec<(String, String)> {
        vec![
            (
                "input_ids".into(),
                format!("ndarray:{}", self.tokens.dtype.name()),
            ),
            ("labels".into(), "ndarray:int32".into()),
        ]
    }

    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed> {
        let t = self.tokens;
        // The response is the last field; the prompt, when there is a prompt field, the one before.
        let (response, prompt) = match parts {
            [prompt, response] => (response.as_slice(), prompt.as_slice()),
            [response] => (response.as_slice(), &[][..]),
            _ => {
                return Err(Error::Config(format!(
                    "SFT examples need 1 or 2 fields, got {}",
                    parts.len()
                )))
            }
        };
        counts.document_tokens += (prompt.len() + response.len()) as u64;
        t.count_in_text(prompt, counts);
        t.count_in_text(response, counts);
        let Some(sample) = pack::sft_sample(
            t.bos,
            prompt,
            response,
            t.eos,
            self.seq_len,
            self.info.mask_prompt,
        ) else {
            return Ok(Pushed::Rejected(
                SkipReason::PromptTooLong,
                format!(
                    "the prompt alone fills --seq-len {} and leaves no response token to train on (pass --on-bad-record skip to skip such examples)",
                    self.seq_len
                ),
            ));
        };
        if sample.truncated_tokens > 0 {
            counts.truncated_samples += 1;
            counts.truncated_tokens += sample.truncated_tokens as u64;
        }
        counts.label_tokens += sample.labels.iter().filter(|&&l| l != -100).count() as u64;
        counts.tokens += sample.input_ids.len() as u64;
        pack::ids_to_bytes(&sample.input_ids, t.dtype, &mut self.ids_bytes);
        self.label_bytes.clear();
        self.label_bytes
            .extend(sample.labels.iter().flat_map(|l| l.to_le_bytes()));
        let n = [sample.input_ids.len() as u64];
        writer.write(&[
            ColumnValue::Array {
                dtype: t.dtype,
                shape: &n,
                data: &self.ids_bytes,
            },
            ColumnValue::Array {
                dtype: Dtype::I32,
                shape: &n,
                data: &self.label_bytes,
            },
        ])?;
        Ok(Pushed::Written)
    }

    fn finish_counts(&self, counts: &mut Counts, writer: &MdsWriter, _is_task: bool) {
        counts.samples = writer.samples_written();
    }

    fn tail(&self) -> Vec<u32> {
        Vec::new()
    }

    fn text_field(&self) -> Option<String> {
        None
    }

    fn sft(&self) -> Option<SftInfo> {
        Some(self.info.clone())
    }
}

/// The pipeline for `opts.mode`: the one place that looks at the mode.
pub(super) fn pipeline(opts: &PrepareOptions, tokens: Tokens) -> Box<dyn ModePipeline> {
    match opts.mode() {
        Mode::Pretrain {
            text_field,
            text_per_line,
        } => Box::new(Pretrain {
            text_field,
            text_per_line,
            seq_len: opts.seq_len,
            tokens,
            packer: Packer::new(opts.seq_len, tokens.dtype),
        }),
        Mode::Sft(info) => Box::new(Sft {
            info,
            seq_len: opts.seq_len,
            tokens,
            ids_bytes: Vec::new(),
            label_bytes: Vec::new(),
        }),
    }
}
