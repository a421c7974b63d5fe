//! The character vocabulary: ids in order of first appearance, encode /
//! decode, and a string form for checkpoints.
//!
//! # Order
//! d2l numbers the characters in the iteration order of a Python `set`,
//! which changes from run to run. recur numbers them in order of **first
//! appearance in the text**: id 0 is the text's first character. The order is
//! therefore a function of the text alone, and the first ids of an encoded
//! text are small and readable.
//!
//! # Serialised form
//! [`Vocab`]'s `Display` (so `to_string()`) writes the characters in id
//! order, nothing else; [`str::parse`] / [`Vocab::from_chars`] read it
//! back and refuse duplicates and the empty string. A checkpoint stores that
//! string (e.g. in safetensors metadata) and gets the very same ids back.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// What [`Vocab::encode_with`] does with a character that is not in the
/// vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownChars {
    /// Fail with [`Error::UnknownChars`], which lists them ([`Vocab::encode`]).
    Reject,
    /// Leave them out.
    Skip,
    /// Encode them as this character, which must be in the vocabulary.
    Replace(char),
}

/// A character vocabulary: a bijection between its characters and the ids
/// `0..len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    /// The characters, indexed by id.
    chars: Vec<char>,
    /// The inverse of `chars`.
    ids: HashMap<char, u32>,
}

impl Vocab {
    /// The distinct characters of `text`, numbered in order of first
    /// appearance. An empty text is [`Error::EmptyVocab`].
    pub fn from_text(text: &str) -> Result<Vocab, Error> {
        let mut chars = Vec::new();
        let mut ids = HashMap::new();
        for ch in text.chars() {
            ids.entry(ch).or_insert_with(|| {
                chars.push(ch);
                (chars.len() - 1) as u32
            });
        }
        if chars.is_empty() {
            return Err(Error::EmptyVocab);
        }
        Ok(Vocab { chars, ids })
    }

    /// The vocabulary whose id `i` is the `i`-th character given. A
    /// character given twice is [`Error::DuplicateChar`]; none at all is
    /// [`Error::EmptyVocab`].
    pub fn from_chars(chars: impl IntoIterator<Item = char>) -> Result<Vocab, Error> {
        let chars: Vec<char> = chars.into_iter().collect();
        if chars.is_empty() {
            return Err(Error::EmptyVocab);
        }
        let mut ids = HashMap::with_capacity(chars.len());
        for (second, &ch) in chars.iter().enumerate() {
            // Distinct chars number at most 0x110000, so ids always fit u32.
            if let Some(&first) = ids.get(&ch) {
                return Err(Error::DuplicateChar {
                    ch,
                    first: first as usize,
                    second,
                });
            }
            ids.insert(ch, second as u32);
        }
        Ok(Vocab { chars, ids })
    }

    /// Number of characters, the `V` of the model's one-hot inputs.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always false: a vocabulary has at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `ch`, if it is in the vocabulary.
    pub fn id(&self, ch: char) -> Option<u32> {
        self.ids.get(&ch).copied()
    }

    /// The character of id `id`, if `id < len`.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The ids of the characters of `text`; any character not in the
    /// vocabulary is [`Error::UnknownChars`], naming every such character.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::with_capacity(text.len());
        self.encode_with(&mut ids, text, UnknownChars::Reject)?;
        Ok(ids)
    }

    /// Appends the ids of the characters of `text` to `out`, treating
    /// unknown characters as `policy` says. On error `out` is left as it
    /// was.
    pub fn encode_with(
        &self,
        out: &mut Vec<u32>,
        text: &str,
        policy: UnknownChars,
    ) -> Result<(), Error> {
        let replacement = match policy {
            UnknownChars::Replace(ch) => Some(self.id(ch).ok_or(Error::InvalidOption {
                what: "UnknownChars::Replace",
                reason: "the replacement character is not in the vocabulary",
            })?),
            _ => None,
        };
        let start = out.len();
        for (position, ch) in text.chars().enumerate() {
            match (self.ids.get(&ch), policy) {
                (Some(&id), _) => out.push(id),
                (None, UnknownChars::Skip) => {}
                (None, UnknownChars::Replace(_)) => out.extend(replacement),
                (None, UnknownChars::Reject) => {
                    out.truncate(start);
                    return Err(self.unknown_chars(text, position));
                }
            }
        }
        Ok(())
    }

    /// [`Error::UnknownChars`] for `text`, whose first unknown character is
    /// at character `first_position`.
    fn unknown_chars(&self, text: &str, first_position: usize) -> Error {
        let mut seen = HashSet::new();
        let chars = text
            .chars()
            .skip(first_position)
            .filter(|ch| !self.ids.contains_key(ch) && seen.insert(*ch))
            .collect();
        Error::UnknownChars {
            chars,
            first_position,
        }
    }

    /// The text of `ids`; an id not below [`Vocab::len`] is
    /// [`Error::UnknownId`].
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let mut text = String::with_capacity(ids.len());
        self.decode_into(&mut text, ids)?;
        Ok(text)
    }

    /// Appends the text of `ids` to `out`. On error `out` is left as it was.
    pub fn decode_into(&self, out: &mut String, ids: &[u32]) -> Result<(), Error> {
        if let Some(index) = ids.iter().position(|&id| id as usize >= self.len()) {
            return Err(Error::UnknownId {
                index,
                id: ids[index],
                vocab_size: self.len(),
            });
        }
        out.extend(ids.iter().map(|&id| self.chars[id as usize]));
        Ok(())
    }
}

/// The serialised form: the characters in id order.
impl fmt::Display for Vocab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 4];
        for ch in &self.chars {
            f.write_str(ch.encode_utf8(&mut buf))?;
        }
        Ok(())
    }
}

/// Reads the serialised form back ([`Vocab::from_chars`] on its characters).
impl FromStr for Vocab {
    type Err = Error;

    fn from_str(s: &str) -> Result<Vocab, Error> {
        Vocab::from_chars(s.chars())
    }
}
