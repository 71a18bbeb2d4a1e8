//! The shape of a buffered answer, read as its bytes arrive, so that an answer custody will
//! refuse is refused at once instead of after the API server ends it.
//!
//! The case that needs it: a request the API server reads as a watch while custody expected
//! one answer (`?watch=f`, `?watch=`, a bare `?watch`: apimachinery's
//! `Convert_Slice_string_To_bool` reads anything but an absent value, `0` or `false` as true).
//! The stream never ends on its own, so a masker that waited for its end would hold the
//! request for the API server's watch timeout. kube-apiserver writes a watch event as
//! `{"type":..,"object":..}` (`metav1.WatchEvent`) and a single answer with its `kind`; this
//! reader follows the top-level keys only, and fails as soon as it sees a top-level `object`
//! key, a `kind` custody does not know, a first byte that does not open an object, or
//! anything but whitespace after the first top-level value. The complete answer is then parsed
//! and checked whole ([`super::value::mask_document`]); this is only the early half.

use super::MaskError;
use super::value::KNOWN_KINDS;

/// The longest top-level key or `kind` value kept to compare; longer ones are no known name.
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the top-level value.
    Before,
    /// Inside the top-level object.
    Inside,
    /// After it.
    After,
}

/// What a top-level string being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    Key,
    Kind,
}

/// Where the reader is with respect to JSON strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    /// Outside any string.
    Outside,
    /// Inside a string.
    Inside,
    /// Right after a backslash inside a string.
    Escaped,
}

/// The streaming reader of a buffered answer's top level.
#[derive(Debug)]
pub(super) struct Shape {
    place: Place,
    depth: usize,
    text: Text,
    /// At depth 1: whether the next string is a key.
    expect_key: bool,
    last_key_is_kind: bool,
    capture: Option<(Capture, Vec<u8>)>,
}

impl Shape {
    pub(super) fn new() -> Self {
        Self {
            place: Place::Before,
            depth: 0,
            text: Text::Outside,
            expect_key: false,
            last_key_is_kind: false,
            capture: None,
        }
    }

    /// Reads the next bytes of the answer; an error as soon as the answer is known to be one
    /// custody will refuse.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<(), MaskError> {
        for &b in chunk {
            match self.place {
                Place::Before => {
                    if b == b'{' {
                        self.place = Place::Inside;
                        self.depth = 1;
                        self.expect_key = true;
                    } else if !b.is_ascii_whitespace() {
                        return Err(MaskError::Shape("the answer is not a JSON object"));
                    }
                }
                Place::After => {
                    if !b.is_ascii_whitespace() {
                        return Err(MaskError::Shape(
                            "more than one JSON document where one answer was expected (the \
                             API server read the request as a watch)",
                        ));
                    }
                }
                Place::Inside => self.inside(b)?,
            }
        }
        Ok(())
    }

    fn inside(&mut self, b: u8) -> Result<(), MaskError> {
        if self.text != Text::Outside {
            if self.text == Text::Escaped {
                self.text = Text::Inside;
            } else if b == b'\\' {
                self.text = Text::Escaped;
            } else if b == b'"' {
                self.text = Text::Outside;
                return self.end_string();
            }
            if let Some((_, bytes)) = &mut self.capture {
                bytes.push(b);
            }
            return Ok(());
        }
        match b {
            b'"' => {
                self.text = Text::Inside;
                if self.depth == 1 {
                    if self.expect_key {
                        self.capture = Some((Capture::Key, Vec::new()));
                    } else if self.last_key_is_kind {
                        self.capture = Some((Capture::Kind, Vec::new()));
                    }
                }
            }
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.place = Place::After;
                }
            }
            b':' if self.depth == 1 => self.expect_key = false,
            b',' if self.depth == 1 => self.expect_key = true,
            _ => {}
        }
        Ok(())
    }

    /// A top-level key or the `kind` value ended: compare it, decoded (escapes included).
    fn end_string(&mut self) -> Result<(), MaskError> {
        let Some((what, raw)) = self.capture.take() else {
            return Ok(());
        };
        let name = if raw.len() > MAX_NAME {
            None
        } else {
            let mut quoted = Vec::with_capacity(raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&raw);
            quoted.push(b'"');
            serde_json::from_slice::<String>(&quoted).ok()
        };
        match what {
            Capture::Key => {
                if name.as_deref() == Some("object") {
                    return Err(MaskError::Shape(
                        "a watch event where a single answer was expected (the API server \
                         read the request as a watch)",
                    ));
                }
                self.last_key_is_kind = name.as_deref() == Some("kind");
            }
            Capture::Kind => {
                if !name.is_some_and(|k| KNOWN_KINDS.contains(&k.as_str())) {
                    return Err(MaskError::Shape(
                        "an object of a kind custody does not know",
                    ));
                }
            }
        }
        Ok(())
    }
}
