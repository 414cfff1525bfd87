//! Canonical CBOR: the one encoding every value has (SPEC.md §4), and a strict decoder.
//!
//! [`check_canonical`] walks raw bytes without allocating and enforces the rules:
//! definite lengths, shortest argument forms, text map keys in bytewise order of their
//! encodings without duplicates, no tags, no floats or simple values other than
//! `false`/`true`/`null`, valid UTF-8, nesting at most [`MAX_DEPTH`], nothing after the
//! value. [`decode`] runs it, decodes with `cbor4ii`, then re-encodes and compares bytes,
//! which also rejects what the walker cannot see (upper-case names, unknown fields,
//! an explicit `null` for an absent field).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ProtocolError;

/// Deepest nesting of arrays and maps accepted (the top-level value is depth 0).
pub const MAX_DEPTH: usize = 8;

/// A broken rule of the canonical encoding, found by [`check_canonical`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ends inside a value.
    #[error("input ends inside a value")]
    Truncated,
    /// Bytes follow the top-level value.
    #[error("{0} bytes follow the value")]
    TrailingBytes(usize),
    /// Additional information 28–30 (reserved by RFC 8949).
    #[error("reserved additional information")]
    Reserved,
    /// A text string is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    Utf8,
    /// An indefinite-length item or a lone break byte.
    #[error("indefinite length")]
    Indefinite,
    /// An integer, length or tag not in its shortest form.
    #[error("argument not in its shortest form")]
    NotShortest,
    /// A map key that is not a text string.
    #[error("map key is not a text string")]
    KeyNotText,
    /// Map keys not in strictly increasing bytewise order of their encodings.
    #[error("map keys out of order or repeated")]
    KeyOrder,
    /// A tag (major type 6).
    #[error("tags are not allowed")]
    Tag,
    /// A float, `undefined` or a simple value other than false/true/null.
    #[error("floats and simple values other than false/true/null are not allowed")]
    ForbiddenSimple,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than the limit")]
    TooDeep,
    /// Decoding and re-encoding the value gives different bytes.
    #[error("value does not re-encode to the same bytes")]
    Reencode,
}

impl From<CborError> for ProtocolError {
    fn from(e: CborError) -> Self {
        match e {
            CborError::TrailingBytes(n) => ProtocolError::TrailingBytes(n),
            CborError::Truncated | CborError::Reserved | CborError::Utf8 => {
                ProtocolError::Malformed(e)
            }
            _ => ProtocolError::NonCanonical(e),
        }
    }
}

/// Checks that `bytes` is exactly one value in canonical form.
pub fn check_canonical(bytes: &[u8]) -> Result<(), CborError> {
    let mut r = Walker { buf: bytes, pos: 0 };
    r.value(0)?;
    match bytes.len() - r.pos {
        0 => Ok(()),
        n => Err(CborError::TrailingBytes(n)),
    }
}

/// The canonical encoding of `value`. Field order in our structs is the canonical key order,
/// so `cbor4ii`'s output is canonical as is; the property tests check that for every type.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and no Serialize impl of this crate returns an error.
    cbor4ii::serde::to_vec(Vec::new(), value).expect("encoding into a Vec cannot fail")
}

/// Decodes exactly one canonical value of type `T` from `bytes` (strict: see module docs).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    check_canonical(bytes)?;
    let value: T =
        cbor4ii::serde::from_slice(bytes).map_err(|e| ProtocolError::Schema(e.to_string()))?;
    if encode(&value) != bytes {
        return Err(CborError::Reencode.into());
    }
    Ok(value)
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let n = usize::try_from(n).map_err(|_| CborError::Truncated)?;
        let end = self.pos.checked_add(n).ok_or(CborError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(CborError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?[0])
    }

    /// Reads an initial byte and its argument; returns (major type, argument).
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        if major == 7 {
            return match info {
                20..=22 => Ok((7, u64::from(info))),
                31 => Err(CborError::Indefinite),
                28..=30 => Err(CborError::Reserved),
                _ => Err(CborError::ForbiddenSimple),
            };
        }
        let (arg, min) = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => (u64::from(self.byte()?), 24),
            25 => (self.be(2)?, 0x100),
            26 => (self.be(4)?, 0x1_0000),
            27 => (self.be(8)?, 0x1_0000_0000),
            28..=30 => return Err(CborError::Reserved),
            _ => return Err(CborError::Indefinite),
        };
        if arg < min {
            return Err(CborError::NotShortest);
        }
        Ok((major, arg))
    }

    fn be(&mut self, n: u64) -> Result<u64, CborError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn value(&mut self, depth: usize) -> Result<(), CborError> {
        let (major, arg) = self.head()?;
        match major {
            0 | 1 | 7 => Ok(()),
            2 => self.take(arg).map(drop),
            3 => {
                let text = self.take(arg)?;
                std::str::from_utf8(text)
                    .map(drop)
                    .map_err(|_| CborError::Utf8)
            }
            4 => {
                if depth >= MAX_DEPTH {
                    return Err(CborError::TooDeep);
                }
                (0..arg).try_for_each(|_| self.value(depth + 1))
            }
            5 => {
                if depth >= MAX_DEPTH {
                    return Err(CborError::TooDeep);
                }
                let mut previous: Option<&[u8]> = None;
                for _ in 0..arg {
                    let start = self.pos;
                    if self.buf.get(start).is_some_and(|b| b >> 5 != 3) {
                        return Err(CborError::KeyNotText);
                    }
                    self.value(depth + 1)?;
                    let key = &self.buf[start..self.pos];
                    if previous.is_some_and(|p| p >= key) {
                        return Err(CborError::KeyOrder);
                    }
                    previous = Some(key);
                    self.value(depth + 1)?;
                }
                Ok(())
            }
            _ => Err(CborError::Tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(hex: &str) -> Result<(), CborError> {
        check_canonical(&hex::decode(hex).unwrap())
    }

    #[test]
    fn accepts_canonical_values() {
        for ok in [
            "00",
            "17",
            "1818",
            "190100",
            "1a00010000",
            "1b0000000100000000",
            "20",
            "f4",
            "f5",
            "f6",
            "40",
            "60",
            "6161",
            "80",
            "a0",
            "a2616101616202",
            "a2616101626161f6",
            "8301820203a0",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        use CborError::*;
        let cases = [
            ("", Truncated),
            ("18", Truncated),
            ("62ff", Truncated),
            ("0000", TrailingBytes(1)),
            ("1817", NotShortest),
            ("1900ff", NotShortest),
            ("1a0000ffff", NotShortest),
            ("1b00000000ffffffff", NotShortest),
            ("3817", NotShortest),
            ("5800", NotShortest),
            ("9f00ff", Indefinite),
            ("5f40ff", Indefinite),
            ("ff", Indefinite),
            ("a2616201616101", KeyOrder),
            ("a2616101616102", KeyOrder),
            ("a10101", KeyNotText),
            ("c000", Tag),
            ("f97e00", ForbiddenSimple),
            ("f7", ForbiddenSimple),
            ("f820", ForbiddenSimple),
            ("1c", Reserved),
            ("62c328", Utf8),
            ("81818181818181818100", TooDeep),
        ];
        for (hex, want) in cases {
            assert_eq!(check(hex), Err(want), "{hex}");
        }
    }

    #[test]
    fn huge_lengths_fail_without_allocating() {
        assert_eq!(check("9bffffffffffffffff"), Err(CborError::Truncated));
        assert_eq!(check("5bffffffffffffffff"), Err(CborError::Truncated));
    }
}
