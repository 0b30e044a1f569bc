//! Which validation rule an invalid archive broke, named as in docs/PROTOCOL.md §2 and §3.
//!
//! rkyv's own error types say too little in a release build: `rancor::Error` is
//! `rancor::Failure` without debug assertions ("failed without error information"), and
//! `rancor::BoxedError` keeps rkyv's message, whose pointers are absolute addresses in the
//! receiver's memory. [`ArchiveError`] keeps the message and the field path rkyv traces, and
//! [`describe`] turns them into the rule's name and a detail in body offsets, which is what
//! a client author needs to find the bug. All of it runs only once validation has failed:
//! validated access only uses it for a second pass over a frame that already failed.

use std::fmt;

use rkyv::rancor::{Source, Trace};

/// The names of the rules, as docs/PROTOCOL.md and `fixtures/wire/invalid.json` spell them.
pub mod rule {
    /// §2: the header's kind byte is one of the table's.
    pub const KNOWN_FRAME_KIND: &str = "known frame kind";
    /// §2: the header's flags byte is 0.
    pub const FLAGS_ARE_ZERO: &str = "flags are zero";
    /// §2: the header's reserved u16 is 0.
    pub const RESERVED_IS_ZERO: &str = "reserved is zero";
    /// §2: `body_len` is at most the receiver's limit.
    pub const BODY_WITHIN_THE_LIMIT: &str = "body within the limit";
    /// §3: the body is at least as long as the root.
    pub const ROOT_FITS_IN_THE_BODY: &str = "root fits in the body";
    /// §3: a pointer's whole target lies inside the body.
    pub const TARGET_INSIDE_THE_BODY: &str = "target inside the body";
    /// §3: a target ends at or before the start of the object enclosing its pointer.
    pub const TARGET_BEFORE_THE_ENCLOSING_OBJECT: &str = "target before the enclosing object";
    /// §3: a target starts at or after the end of the previous sibling's target.
    pub const TARGETS_IN_ORDER: &str = "targets in order";
    /// §3/§4: a string of at most 8 bytes is inline.
    pub const SHORT_STRINGS_INLINE: &str = "short strings inline";
    /// §3: strings are UTF-8.
    pub const VALID_UTF8: &str = "valid UTF-8";
    /// §3: a bool byte is 0x00 or 0x01.
    pub const BOOL_IS_0_OR_1: &str = "bool is 0 or 1";
    /// §3: an Option tag is 0x00 or 0x01.
    pub const OPTION_TAG_IS_0_OR_1: &str = "option tag is 0 or 1";
    /// §3: an enum tag is one the enum lists.
    pub const KNOWN_ENUM_TAG: &str = "known enum tag";
    /// A failure of rkyv's validator that none of the above names (not expected with
    /// peerd's message types; kept so that an rkyv change degrades to a vaguer reason
    /// rather than a wrong one).
    pub const ARCHIVE: &str = "valid archive";
}

/// The error rkyv's validated access reports through: rkyv's message and the path of
/// fields and elements it was checking, innermost first.
#[derive(Debug)]
pub(crate) struct ArchiveError(Box<Failed>);

#[derive(Debug)]
struct Failed {
    message: String,
    path: Vec<String>,
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ArchiveError {}

impl Source for ArchiveError {
    #[cold]
    fn new<T: std::error::Error + Send + Sync + 'static>(source: T) -> Self {
        ArchiveError(Box::new(Failed {
            message: source.to_string(),
            path: Vec::new(),
        }))
    }
}

impl Trace for ArchiveError {
    #[cold]
    fn trace<R>(mut self, trace: R) -> Self
    where
        R: fmt::Debug + fmt::Display + Send + Sync + 'static,
    {
        if let Some(segment) = path_segment(&trace.to_string()) {
            self.0.path.push(segment);
        }
        self
    }
}

/// One step of the path from bytecheck's trace lines: a field of one of our structs, or an
/// element index. The inner structure of rkyv's own types (a string's `repr`, an Option's
/// variant) is not a step a reader of PROTOCOL.md knows, so it is left out.
fn path_segment(trace: &str) -> Option<String> {
    let quoted = |s: &str| s.split('\'').nth(1).map(str::to_string);
    if let Some(rest) = trace.strip_prefix("while checking field '") {
        let field = rest.split('\'').next()?;
        let owner = rest.split("of struct '").nth(1)?;
        if owner.starts_with("ArchivedString") || owner.starts_with("ArchivedVec") {
            return None;
        }
        return Some(field.to_string());
    }
    if trace.starts_with("while checking index '") && trace.ends_with("of slice") {
        return quoted(trace).map(|i| format!("[{i}]"));
    }
    None
}

/// The rule `e` broke and a detail for humans, with rkyv's absolute addresses turned into
/// offsets in `body`.
pub(crate) fn describe(e: &ArchiveError, body: &[u8]) -> (&'static str, String) {
    let Failed { message, path } = &*e.0;
    let mut at = String::new();
    for seg in path.iter().rev() {
        if !at.is_empty() && !seg.starts_with('[') {
            at.push('.');
        }
        at.push_str(seg);
    }
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    };
    if let Some((ptr, size, start, end)) = subtree_overrun(message) {
        let base = body.as_ptr() as usize;
        let len = body.len();
        let off = |a: usize| a.wrapping_sub(base) as isize;
        let (t0, w0, w1) = (off(ptr), off(start), off(end));
        let t1 = t0.checked_add_unsigned(size);
        let rule = if (w0, w1) == (0, len as isize) {
            // Only the root is checked against the whole body.
            return (
                rule::ROOT_FITS_IN_THE_BODY,
                format!("a body of {len} bytes cannot hold the {size}-byte root"),
            );
        } else if t0 < 0 || t1.is_none_or(|t1| t1 > len as isize) {
            rule::TARGET_INSIDE_THE_BODY
        } else if t0 < w0 {
            rule::TARGETS_IN_ORDER
        } else {
            rule::TARGET_BEFORE_THE_ENCLOSING_OBJECT
        };
        let target = match t1 {
            Some(t1) => format!("body {t0}..{t1}"),
            None => format!("body {t0} + {size}"),
        };
        return (
            rule,
            format!("{prefix}target of {size} bytes at {target}; the allowed range is {w0}..{w1}"),
        );
    }
    let rule = if message.starts_with("String representation was out-of-line") {
        rule::SHORT_STRINGS_INLINE
    } else if message.starts_with("invalid UTF-8") {
        rule::VALID_UTF8
    } else if message.starts_with("bool set to invalid byte") {
        rule::BOOL_IS_0_OR_1
    } else if message.starts_with("invalid discriminant") {
        if message.ends_with("'ArchivedOption'") {
            rule::OPTION_TAG_IS_0_OR_1
        } else {
            rule::KNOWN_ENUM_TAG
        }
    } else {
        rule::ARCHIVE
    };
    (rule, format!("{prefix}{message}"))
}

/// Parse rkyv's "subtree pointer overran range: ptr 0x.. size N in range 0x..0x.." (the
/// one failure of its bounds check, whichever bound was crossed).
fn subtree_overrun(message: &str) -> Option<(usize, usize, usize, usize)> {
    let rest = message.strip_prefix("subtree pointer overran range: ptr ")?;
    let (ptr, rest) = rest.split_once(" size ")?;
    let (size, range) = rest.split_once(" in range ")?;
    let (start, end) = range.split_once("..")?;
    let hex = |s: &str| usize::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    Some((hex(ptr)?, size.trim().parse().ok()?, hex(start)?, hex(end)?))
}
