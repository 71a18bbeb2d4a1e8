//! Name patterns: globs where `*` matches any run of characters, and the rule that keeps
//! `system:` identities out of reach of wildcards.
//!
//! A dozen lines of matcher instead of a glob crate: policy patterns need only `*`, and a
//! crate's extra syntax (`?`, `[...]`, `{a,b}`, escapes) would be more for operators to get
//! wrong in a file that decides who may do what.

/// Whether `pattern` matches all of `text`; `*` matches any run of characters, `/` included.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one item; an empty pattern is one empty part.
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text must have been the literal.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether any of `patterns` matches `text`.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob(p, text))
}

/// Matching for identities that can be handed out (impersonation targets): a `system:` name
/// matches only a pattern that itself starts with `system:`, so `*` never reaches
/// `system:masters` or a service account. Such patterns are refused at load unless the role
/// is marked break-glass.
pub fn identity(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob(p, name) && (!is_system(name) || is_system(p)))
}

/// A Kubernetes-reserved identity (`system:masters`, `system:serviceaccount:...`).
pub fn is_system(name: &str) -> bool {
    name.starts_with("system:")
}
