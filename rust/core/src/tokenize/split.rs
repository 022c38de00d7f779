//! HF's added-token split, done before the fast encoder: the text between added tokens is
//! encoded without added-token matching and the matched tokens' ids are spliced in.

use serde_json::Value;

use super::vocab::AddedToken;
use super::Encoder;

/// HF's added-token split, done with `memmem` searches instead of the fast encoder's
/// Aho-Corasick matcher, which costs a quarter of its time on text with Pythia's space-run tokens.
///
/// HF splits in two passes: the `normalized: false` tokens on the raw text (leftmost-longest),
/// then the `normalized: true` tokens on each normalized piece between those matches. The pieces
/// left over are pre-tokenized and BPE'd one by one, so encoding each of them alone (no added-token
/// matching) and splicing in the matched tokens' ids gives HF's ids. Every match starts with its
/// token's first two bytes (the needle), so the passes look only where a needle occurs.
///
/// The second pass runs on the raw pieces, which is exact when normalization cannot change where
/// its tokens match: no normalizer, or NFC and tokens made of spaces (NFC never composes with,
/// reorders across or produces U+0020, so NFC(a + " " + b) = NFC(a) + " " + NFC(b)). Where that
/// (or lstrip/rstrip/single_word, which this split does not do) rules the split out, the needles
/// still prove a text free of added tokens, and a text with one goes to the fast encoder whole.
/// Pythia's 25 added tokens give two needles, "<|" (raw) and "  " (normalized).
pub(super) struct AddedSplit {
    raw: SplitPass,
    normalized: SplitPass,
    /// Whether the two passes reproduce HF's split (see above).
    exact: bool,
}

/// One pass: tokens grouped by needle.
struct SplitPass {
    groups: Vec<(memchr::memmem::Finder<'static>, Group)>,
}

/// An added token's content and id.
type Token = (Vec<u8>, u32);

/// The tokens that start with one needle.
enum Group {
    /// Contents and ids, longest first.
    Tokens(Vec<Token>),
    /// Runs of one byte (Pythia's spaces): `ids[n]` is the token of n bytes, if there is one. The
    /// longest match is found from the run's length, not by comparing every token.
    Run { byte: u8, ids: Vec<Option<u32>> },
}

impl Group {
    fn new(mut toks: Vec<Token>) -> Group {
        let byte = toks[0].0[0];
        if toks.iter().all(|(t, _)| t.iter().all(|&b| b == byte)) {
            let mut ids = vec![None; toks.iter().map(|(t, _)| t.len()).max().unwrap_or(0) + 1];
            for (t, id) in toks {
                ids[t.len()] = Some(id);
            }
            return Group::Run { byte, ids };
        }
        toks.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Group::Tokens(toks)
    }

    /// The longest token of the group at the start of `text`: (length, id).
    fn longest(&self, text: &[u8]) -> Option<(usize, u32)> {
        match self {
            Group::Tokens(toks) => toks
                .iter()
                .find(|(t, _)| text.starts_with(t))
                .map(|(t, id)| (t.len(), *id)),
            Group::Run { byte, ids } => {
                let run = text
                    .iter()
                    .take(ids.len() - 1)
                    .take_while(|&&b| b == *byte)
                    .count();
                (1..=run).rev().find_map(|n| ids[n].map(|id| (n, id)))
            }
        }
    }
}

/// A piece of a text after the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// Text with no added token in it: encoded without added-token matching.
    Plain(&'a str),
    /// A matched added token.
    Token(u32),
    /// A text the split cannot do: the fast encoder matches its added tokens.
    Whole(&'a str),
}

/// More needles than this per pass and the searches stop paying for themselves.
const MAX_NEEDLES: usize = 4;

impl SplitPass {
    fn new(tokens: &[&AddedToken]) -> Option<SplitPass> {
        let mut groups: Vec<(Vec<u8>, Vec<Token>)> = Vec::new();
        for t in tokens {
            let bytes = t.content.as_bytes();
            let needle = bytes[..bytes.len().min(2)].to_vec();
            match groups.iter_mut().find(|(n, _)| *n == needle) {
                Some((_, g)) => g.push((bytes.to_vec(), t.matched_id)),
                None => groups.push((needle, vec![(bytes.to_vec(), t.matched_id)])),
            }
        }
        if groups.len() > MAX_NEEDLES {
            return None;
        }
        Some(SplitPass {
            groups: groups
                .into_iter()
                .map(|(needle, toks)| {
                    (
                        memchr::memmem::Finder::new(&needle).into_owned(),
                        Group::new(toks),
                    )
                })
                .collect(),
        })
    }

    fn may_match(&self, text: &str) -> bool {
        self.groups
            .iter()
            .any(|(f, _)| f.find(text.as_bytes()).is_some())
    }

    /// Leftmost-longest matches of the pass's tokens in `text`, with the text between them.
    fn split<'a>(&self, text: &'a str, emit: &mut impl FnMut(Piece<'a>)) {
        let bytes = text.as_bytes();
        let find = |g: usize, from: usize| self.groups[g].0.find(&bytes[from..]).map(|i| i + from);
        // Each needle's next occurrence at or after `pos`, searched again only once passed.
        let mut next: Vec<Option<usize>> = (0..self.groups.len()).map(|g| find(g, 0)).collect();
        let (mut pos, mut start) = (0, 0);
        loop {
            for (g, hit) in next.iter_mut().enumerate() {
                if matches!(*hit, Some(h) if h < pos) {
                    *hit = find(g, pos);
                }
            }
            let Some(p) = next.iter().flatten().copied().min() else {
                break;
            };
            let longest = self
                .groups
                .iter()
                .zip(&next)
                .filter(|(_, hit)| **hit == Some(p))
                .filter_map(|((_, group), _)| group.longest(&bytes[p..]))
                .max_by_key(|&(len, _)| len);
            match longest {
                Some((len, id)) => {
                    // `p` and `p + len` are char boundaries: a whole token (valid UTF-8) matched
                    // there in valid UTF-8.
                    if start < p {
                        emit(Piece::Plain(&text[start..p]));
                    }
                    emit(Piece::Token(id));
                    pos = p + len;
                    start = pos;
                }
                None => pos = p + 1,
            }
        }
        if start < text.len() {
            emit(Piece::Plain(&text[start..]));
        }
    }
}

impl AddedSplit {
    pub(super) fn new(json: &Value, added: &[AddedToken]) -> Option<AddedSplit> {
        let normalizer = &json["normalizer"];
        let nfc = normalizer["type"].as_str() == Some("NFC");
        if !(normalizer.is_null() || nfc) || added.iter().any(|t| t.content.is_empty()) {
            return None;
        }
        let (raw, normalized): (Vec<&AddedToken>, Vec<&AddedToken>) =
            added.iter().partition(|t| !t.normalized);
        // Without the exact split the needles must still prove absence, so under NFC a needle
        // must be bytes NFC cannot produce from others: ASCII (composition makes only non-ASCII
        // characters, "e" + U+0301 → "é") except the three characters a canonical singleton maps
        // to (U+037E → ';', U+1FEF → '`', U+212A → 'K').
        let nfc_safe = |t: &&AddedToken| {
            t.content.as_bytes()[..t.content.len().min(2)]
                .iter()
                .all(|b| b.is_ascii() && !matches!(b, b';' | b'`' | b'K'))
        };
        let mut contents: Vec<&str> = added.iter().map(|t| t.content.as_str()).collect();
        contents.sort_unstable();
        let unique = contents.windows(2).all(|w| w[0] != w[1]);
        let exact = unique
            && added
                .iter()
                .all(|t| !t.lstrip && !t.rstrip && !t.single_word)
            && (!nfc
                || normalized
                    .iter()
                    .all(|t| t.content.bytes().all(|b| b == b' ')));
        if !exact && nfc && !normalized.iter().all(nfc_safe) {
            return None;
        }
        Some(AddedSplit {
            raw: SplitPass::new(&raw)?,
            normalized: SplitPass::new(&normalized)?,
            exact,
        })
    }

    /// The pieces of `text`, in order.
    fn split<'a>(&self, text: &'a str, emit: &mut impl FnMut(Piece<'a>)) {
        if !self.exact {
            let any = self.raw.may_match(text) || self.normalized.may_match(text);
            emit(if any {
                Piece::Whole(text)
            } else {
                Piece::Plain(text)
            });
            return;
        }
        self.raw.split(text, &mut |piece| match piece {
            Piece::Plain(t) => self.normalized.split(t, emit),
            other => emit(other),
        });
    }
}

impl Encoder {
    /// The pieces of `text` for the fast encoder (one `Whole` piece without a split).
    pub(super) fn pieces<'a>(&self, text: &'a str, emit: &mut impl FnMut(Piece<'a>)) {
        match &self.split {
            Some(split) => split.split(text, emit),
            None => emit(Piece::Whole(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::fixtures::{pythia, pythia_path};
    use super::*;
    use crate::tokenize::EncoderChoice;

    /// Texts where an added-token split can go wrong: tokens in text, near-misses, space runs
    /// longer than the longest token, NFC changes next to spaces.
    const ADVERSARIAL: &[&str] = &[
        "Plain prose, one space between words.",
        "def f():\n    return 1  # indented code: runs of spaces are added tokens",
        "a<|endoftext|>b<|padding|>c <|endoftext|> d",
        "<|endoftext|>",
        "<|endoftext|><|padding|><|endoftext|>",
        "<|<|endoftext|>|>",
        "<|endoftext",
        "<| not a token |>",
        "  <|endoftext|>  x",
        "x                                 y (33 spaces)",
        "48:                                                x",
        "49:                                                 x",
        " ",
        "  ",
        "   ",
        "",
        "<",
        "end with <|",
        "caf\u{e9} \u{37e} Kelvin \u{212a} na\u{ef}ve  double",
        "combining after spaces:  \u{301}a   \u{308}\u{301}b e\u{301}  e\u{301}",
        "\t\t  \t mixed whitespace  \n  \n",
        "\u{4e2d}\u{6587}  \u{65e5}\u{672c}\u{8a9e}  \u{1f600}  ",
    ];

    #[test]
    fn the_added_token_split_gives_hf_ids() {
        let fast = pythia();
        let hf = Encoder::from_file(&pythia_path(), EncoderChoice::Hf).unwrap();
        let split = fast
            .split
            .as_ref()
            .expect("Pythia's added tokens can be split");
        assert!(split.exact);
        assert_eq!(
            (split.raw.groups.len(), split.normalized.groups.len()),
            (1, 1),
            "Pythia's added tokens start with \"<|\" (raw) or \"  \" (normalized)"
        );
        for t in ADVERSARIAL {
            assert_eq!(fast.encode(t).unwrap(), hf.encode(t).unwrap(), "{t:?}");
        }
        let mut pieces = Vec::new();
        fast.pieces("a  <|endoftext|>b", &mut |p| pieces.push(p));
        assert_eq!(
            pieces,
            [
                Piece::Plain("a"),
                Piece::Token(50276),
                Piece::Token(0),
                Piece::Plain("b")
            ]
        );
        // A batch comes back in its own order.
        let want: Vec<Vec<u32>> = ADVERSARIAL.iter().map(|t| hf.encode(t).unwrap()).collect();
        assert_eq!(fast.encode_batch(ADVERSARIAL).unwrap(), want);
    }

    /// A tokenizer.json: Pythia's with `normalizer` and extra added tokens replaced.
    fn variant(dir: &Path, name: &str, normalizer: Value, extra: Value) -> PathBuf {
        let mut json: Value =
            serde_json::from_slice(&std::fs::read(pythia_path()).unwrap()).unwrap();
        json["normalizer"] = normalizer;
        json["added_tokens"]
            .as_array_mut()
            .unwrap()
            .extend(extra.as_array().unwrap().iter().cloned());
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }

    fn token(id: u32, content: &str, normalized: bool, lstrip: bool) -> Value {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": lstrip,
                           "rstrip": false, "normalized": normalized, "special": false})
    }

    #[test]
    fn the_split_follows_hf_across_its_two_passes_and_falls_back_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let texts = [
            "xqbqzj",
            "xxqbqzj bqzj xqbq",
            "bqzjxqbq",
            "a  b",
            "xqbq  bqzj",
            " bqzj  bqzj",
            "- -- --- ---- ----- ------- --------x",
            "plain",
        ];
        // Raw "bqzj" is matched before normalized "xqbq", although "xqbq" starts further left.
        let two_pass = variant(
            dir.path(),
            "two-pass.json",
            Value::Null,
            serde_json::json!([
                token(50277, "bqzj", false, false),
                token(50278, "xqbq", true, false),
                // A run group with a gap: no token of three dashes.
                token(50279, "--", true, false),
                token(50280, "----", true, false),
            ]),
        );
        // lstrip is not done by the split: texts with a needle go to the fast encoder whole.
        let lstrip = variant(
            dir.path(),
            "lstrip.json",
            Value::Null,
            serde_json::json!([token(50277, "bqzj", false, true)]),
        );
        // Under NFC a normalized token other than spaces may match only after normalization:
        // no split, but an ASCII needle still proves a text free of it...
        let nfc = serde_json::json!({"type": "NFC"});
        let nfc_ascii = variant(
            dir.path(),
            "nfc-ascii.json",
            nfc.clone(),
            serde_json::json!([token(50277, "bq\u{e9}", true, false)]),
        );
        // ...and a needle NFC can compose ("e" + U+0301 → "é") proves nothing.
        let nfc_composed = variant(
            dir.path(),
            "nfc-composed.json",
            nfc,
            serde_json::json!([token(50277, "\u{e9}t\u{e9}", true, false)]),
        );
        let extra = [
            "e\u{301}te\u{301}",
            "\u{e9}t\u{e9}  \u{e9}te\u{301}",
            "bqe\u{301} bq\u{e9}",
        ];
        let cases = [
            (&two_pass, Some(true)),
            (&lstrip, Some(false)),
            (&nfc_ascii, Some(false)),
            (&nfc_composed, None),
        ];
        for (path, exact) in cases {
            let fast = Encoder::from_file(path, EncoderChoice::Auto).unwrap();
            let hf = Encoder::from_file(path, EncoderChoice::Hf).unwrap();
            let whole = fast.fast.as_ref().expect("on the fast encoder");
            assert_eq!(fast.split.as_ref().map(|s| s.exact), exact, "{path:?}");
            for t in texts.iter().chain(ADVERSARIAL).chain(&extra) {
                let ids = fast.encode(t).unwrap();
                // The fallback is the fast encoder's own matcher, unchanged, where it can be
                // trusted. (With the split, "xqbqzj" differs from it: fastokens 0.3.5 matches both
                // passes' tokens at once.)
                if exact != Some(true) && fast.whole_on_fast {
                    let unsplit = whole
                        .encode_with_policy(t, false, fastokens::AddedTokenPolicy::All)
                        .unwrap();
                    assert_eq!(ids, unsplit, "{path:?} {t:?}");
                }
                // (fastokens 0.3.5 matches a normalized "  " before a raw lstrip token that would
                // absorb it, where HF's raw pass comes first: such a text goes to HF.)
                assert_eq!(ids, hf.encode(t).unwrap(), "{path:?} {t:?}");
            }
        }
    }
}
