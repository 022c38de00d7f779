//! The thread pipeline of `prepare`: a reader thread, one or two encoder threads and the writer,
//! batches kept in input order (see the module doc of `prepare`).

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};

use rayon::prelude::*;

use super::modes::{ModePipeline, Pushed};
use super::{OnBadRecord, PrepareOptions};
use crate::error::{Error, Location, Result};
use crate::input::{self, InputFile, ReadOptions};
use crate::manifest::Counts;
use crate::mds::MdsWriter;
use crate::pool::check_cancel;
use crate::progress::Progress;
use crate::record::{self, Extracted, SkipReason};
use crate::tokenize::Encoder;

/// One record after parsing: its text fields, or why it cannot be used.
type Parsed = std::result::Result<Vec<String>, (SkipReason, String)>;
/// A record's location, what parsing made of it, and its token ids per field.
type EncodedRecord = (crate::error::Unit, Parsed, Vec<Vec<u32>>);

/// Parse a batch in parallel, tokenize all its texts in one call, and return each record's
/// token ids per field (or why it was rejected), in input order.
fn encode_batch(
    pool: &rayon::ThreadPool,
    enc: &Encoder,
    records: Vec<input::RawRecord>,
    fields: &[String],
    label: &str,
) -> Result<Vec<EncodedRecord>> {
    let parsed: Vec<(crate::error::Unit, Parsed)> = pool.install(|| {
        records
            .into_par_iter()
            .map(|rec| {
                let p = match record::extract(rec.payload, fields) {
                    Extracted::Rejected(r, m) => Err((r, m)),
                    Extracted::Fields(f) if f.last().is_none_or(|s| s.is_empty()) => {
                        Err((SkipReason::EmptyDocument, "empty document".into()))
                    }
                    Extracted::Fields(f) => Ok(f),
                };
                (rec.unit, p)
            })
            .collect()
    });
    let texts: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .flat_map(|f| f.iter().map(String::as_str))
        .collect();
    let ids = pool.install(|| enc.encode_batch(&texts)).map_err(|e| {
        // Name the record the encoder failed on (a tokenizer that panics on some text).
        let failed = parsed.iter().find(|(_, p)| {
            p.as_ref()
                .is_ok_and(|f| f.iter().any(|t| enc.encode(t).is_err()))
        });
        match failed {
            Some((unit, _)) => Error::BadRecord {
                loc: Location {
                    path: label.to_string(),
                    unit: *unit,
                },
                msg: format!("cannot be tokenized: {e}"),
            },
            None => e,
        }
    })?;
    let mut ids = ids.into_iter();
    Ok(parsed
        .into_iter()
        .map(|(unit, p)| {
            let n = p.as_ref().map_or(0, Vec::len);
            let parts: Vec<Vec<u32>> = ids.by_ref().take(n).collect();
            (unit, p, parts)
        })
        .collect())
}

/// What the encoding loop reads from.
pub(super) struct Source<'a> {
    pub opts: &'a PrepareOptions,
    pub pool: &'a rayon::ThreadPool,
    pub enc: &'a Encoder,
    pub files: &'a [InputFile],
}

/// Read every file on a reader thread, encode its batches in parallel here and hand the records
/// to `mode` on a writer thread, in input order. Returns the documents used per file, and the
/// fingerprints of the files the reading saw whole.
pub(super) fn encode_all(
    src: &Source<'_>,
    mode: &mut dyn ModePipeline,
    writer: &mut MdsWriter,
    counts: &mut Counts,
    progress: &Progress,
) -> Result<(Vec<u64>, Vec<Option<String>>)> {
    let fields = mode.fields();
    let read_opts = ReadOptions {
        fields: fields.clone(),
        text_per_line: mode.text_per_line(),
    };
    let consumed = Arc::new(AtomicU64::new(0));
    // Reader → (raw batches) → encoders → (encoded batches) → writer. With two or more threads,
    // two encoders each take every other batch, so one batch's parse and tokenization overlap
    // the next one's, and the cores do not idle while a batch's last long text finishes. The
    // writer takes the batches from the encoders in the same rotation, so they are written in
    // input order. One batch in flight per channel bounds the memory.
    let encoders = if src.pool.current_num_threads() > 1 {
        2
    } else {
        1
    };
    let (raw_txs, raw_rxs): (Vec<_>, Vec<_>) = (0..encoders)
        .map(|_| mpsc::sync_channel::<input::RawBatch>(1))
        .unzip();
    let (enc_txs, enc_rxs): (Vec<_>, Vec<_>) = (0..encoders)
        .map(|_| mpsc::sync_channel::<(usize, u64, Result<Vec<EncodedRecord>>)>(1))
        .unzip();
    std::thread::scope(|scope| {
        let reader_consumed = consumed.clone();
        let files = src.files;
        let reader = scope.spawn(move || {
            let mut batches = 0usize;
            input::read_all(files, &read_opts, &reader_consumed, &mut |b| {
                batches += 1;
                // A closed channel: an encoder or the writer stopped, on an error returned below.
                raw_txs[(batches - 1) % raw_txs.len()].send(b).is_ok()
            })
        });
        for (raw_rx, enc_tx) in raw_rxs.into_iter().zip(enc_txs) {
            let fields = &fields;
            scope.spawn(move || {
                for batch in raw_rx.iter() {
                    let encoded = check_cancel(src.opts.output.cancel()).and_then(|()| {
                        let label = &src.files[batch.file].label;
                        encode_batch(src.pool, src.enc, batch.records, fields, label)
                    });
                    let failed = encoded.is_err();
                    if enc_tx.send((batch.file, batch.input_pos, encoded)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        let written = scope.spawn(move || -> Result<Vec<u64>> {
            let mut docs_per_file = vec![0u64; src.files.len()];
            // A closed channel in its turn: the reader sent no more batches.
            for (file, input_pos, encoded) in
                (0..).map_while(|i| enc_rxs[i % enc_rxs.len()].recv().ok())
            {
                docs_per_file[file] += consume_batch(src, file, encoded?, mode, writer, counts)?;
                progress.update(input_pos, counts.documents, counts.document_tokens);
            }
            Ok(docs_per_file)
        });
        let written = written
            .join()
            .map_err(|_| Error::Config("output writer thread panicked".into()))?;
        let read = reader
            .join()
            .map_err(|_| Error::Config("input reader thread panicked".into()))?;
        // The first error in input order: the writer's or an encoder's (in batch order), then
        // the reader's. (An encoder panic reaches here as the writer's channel closing early,
        // then as the scope's own panic.)
        Ok((written?, read?))
    })
}

/// Hand one batch's records to `mode`, in order; rejected ones become an error or a skip as
/// `--on-bad-record` says. Returns how many documents were used.
fn consume_batch(
    src: &Source<'_>,
    file: usize,
    encoded: Vec<EncodedRecord>,
    mode: &mut dyn ModePipeline,
    writer: &mut MdsWriter,
    counts: &mut Counts,
) -> Result<u64> {
    let mut docs = 0;
    for (unit, parsed, parts) in encoded {
        let pushed = match &parsed {
            Err((reason, msg)) => Pushed::Rejected(*reason, msg.clone()),
            Ok(_) => mode.push(&parts, writer, counts)?,
        };
        if let Pushed::Rejected(reason, msg) = pushed {
            if src.opts.on_bad_record == OnBadRecord::Error && !reason.is_benign() {
                return Err(Error::BadRecord {
                    loc: Location {
                        path: src.files[file].label.clone(),
                        unit,
                    },
                    msg,
                });
            }
            *counts
                .skipped
                .entry(reason.as_str().to_string())
                .or_default() += 1;
            continue;
        }
        let text_bytes: usize = parsed.iter().flatten().map(String::len).sum();
        counts.documents += 1;
        counts.text_bytes += text_bytes as u64;
        docs += 1;
    }
    Ok(docs)
}
