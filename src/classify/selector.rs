//! Field and label selectors, as far as classification depends on them: the object name a
//! `fieldSelector` pins (`fields.Selector.RequiresExactMatch("metadata.name")`), and whether
//! apimachinery can parse the selectors at all (when it cannot, `NewRequestInfo` drops the
//! name and reads `watch` differently).

/// A field selector as `fields.ParseSelector` reads it (k8s.io/apimachinery/pkg/fields/
/// selector.go): `Err(())` when it does not parse, else the value the first `metadata.name`
/// equality term requires, if any.
///
/// Semantics followed exactly: terms are split on unescaped `,` (`splitTerms`, the backslash
/// kept), **sorted** bytewise, empty terms skipped; each term splits at the first `!=`, `==`
/// or `=` (in that order of preference at each position, `splitTerm`), the left side taken
/// verbatim (no trimming); the right side is unescaped (`UnescapeValue`: `\\`, `\,`, `\=`
/// only; a bare `,` or `=` or a trailing `\` is an error). `RequiresExactMatch` returns the
/// first `=`/`==` term (in sorted order) on the field; a single term with empty field and
/// value is `Everything`, which matches nothing.
pub fn field_selector_name(selector: &str) -> Result<Option<String>, ()> {
    let mut terms = split_terms(selector);
    terms.sort_unstable();
    let mut name = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (field, op, raw) = split_term(term).ok_or(())?;
        let value = unescape_value(raw)?;
        if name.is_none() && op != "!=" && field == "metadata.name" {
            name = Some(value);
        }
    }
    Ok(name)
}

/// `splitTerms`: split on commas not preceded by an escaping backslash.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// `splitTerm`: the first position where `!=`, `==` or `=` starts.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        ["!=", "==", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .map(|op| (&term[..i], op, &rest[op.len()..]))
    })
}

/// `UnescapeValue`.
fn unescape_value(raw: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(());
            }
            out.push(c);
            in_slash = false;
        } else {
            match c {
                '\\' => in_slash = true,
                ',' | '=' => return Err(()),
                other => out.push(other),
            }
        }
    }
    if in_slash {
        return Err(());
    }
    Ok(out)
}

/// Whether `labels.Parse` certainly accepts `selector`. custody does not reimplement the
/// whole label selector grammar; it recognises a subset that the parser provably accepts:
/// comma-separated terms `k`, `!k`, `k=v`, `k==v`, `k!=v` without spaces, where `k` and `v`
/// are non-empty label names (`[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?`) other than
/// the keywords `in` and `notin`. `false` means "not known", not "invalid".
#[must_use]
pub fn label_selector_certainly_valid(selector: &str) -> bool {
    selector.is_empty() || selector.split(',').all(label_term_certainly_valid)
}

/// One term of the subset above. `!k` takes no operator (`!k=v` does not parse).
fn label_term_certainly_valid(term: &str) -> bool {
    if let Some(key) = term.strip_prefix('!') {
        return plain_label(key);
    }
    let Some(i) = term.find(['=', '!']) else {
        return plain_label(term);
    };
    let rest = &term[i..];
    let value = rest
        .strip_prefix("==")
        .or_else(|| rest.strip_prefix("!="))
        .or_else(|| rest.strip_prefix('='));
    value.is_some_and(|v| plain_label(&term[..i]) && plain_label(v))
}

/// A label name outside the selector keywords.
fn plain_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && s != "in"
        && s != "notin"
}

/// `content.IsPathSegmentName` (k8s.io/apimachinery/pkg/api/validate/content/path.go): not
/// `.` or `..`, no `/` and no `%`. The empty string passes (and names nothing).
#[must_use]
pub fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}
