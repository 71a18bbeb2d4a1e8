//! Full-text search with custody's own tokens, so that PostgreSQL finds what the `SQLite`
//! index finds: a token is a run of letters and digits, lowercased (`/etc/passwd` is `etc` and
//! `passwd`; PostgreSQL's text parser would keep it as one file-path token, and a search for
//! `passwd` would miss it). Rows store their distinct tokens in a GIN-indexed array; a search
//! needs every token of the words asked for in one row. Pure code, tested on strings.

use std::collections::BTreeSet;

/// The longest token kept; longer runs are cut (a GIN index entry has a size limit, and
/// nobody searches for a 200-character word).
const MAX_TOKEN_CHARS: usize = 64;

/// How many tokens a snippet shows.
const SNIPPET_TOKENS: usize = 16;

/// The distinct tokens of `text`, sorted.
pub fn tokens(text: &str) -> Vec<String> {
    let set: BTreeSet<String> = spans(text).map(|(s, e)| token(&text[s..e])).collect();
    set.into_iter().collect()
}

/// The tokens a search for `words` needs (all of them, in one row); `None` when nothing in
/// it is searchable.
pub fn query_tokens(words: &str) -> Option<Vec<String>> {
    let wanted = tokens(words);
    (!wanted.is_empty()).then_some(wanted)
}

/// The piece of `body` around its first token in `wanted`, matched tokens in `«` `»`, `…`
/// where the body was cut: what the `SQLite` index's `snippet()` shows.
pub fn snippet(body: &str, wanted: &[String]) -> String {
    let spans: Vec<(usize, usize)> = spans(body).collect();
    let matches = |&(s, e): &(usize, usize)| wanted.contains(&token(&body[s..e]));
    let first = spans.iter().position(matches).unwrap_or(0);
    let from = first.saturating_sub(3);
    let to = (from + SNIPPET_TOKENS).min(spans.len());
    let Some(&(start, _)) = spans.get(from) else {
        return String::new();
    };
    let end = spans.get(to.saturating_sub(1)).map_or(start, |&(_, e)| e);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    let mut at = start;
    for span in &spans[from..to] {
        out.push_str(&body[at..span.0]);
        if matches(span) {
            out.push('«');
            out.push_str(&body[span.0..span.1]);
            out.push('»');
        } else {
            out.push_str(&body[span.0..span.1]);
        }
        at = span.1;
    }
    debug_assert_eq!(at, end);
    if to < spans.len() {
        out.push('…');
    }
    out
}

/// The byte ranges of the runs of letters and digits in `text`.
fn spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, _) = chars.by_ref().find(|(_, c)| c.is_alphanumeric())?;
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                end = i;
                break;
            }
            chars.next();
        }
        Some((start, end))
    })
}

fn token(run: &str) -> String {
    run.chars()
        .flat_map(char::to_lowercase)
        .take(MAX_TOKEN_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_flags_split_as_the_sqlite_index_splits_them() {
        assert_eq!(tokens("cat /etc/passwd"), ["cat", "etc", "passwd"]);
        assert_eq!(
            tokens("kubectl --namespace=Prod get PODS"),
            ["get", "kubectl", "namespace", "pods", "prod"]
        );
        assert_eq!(tokens("Grüße, ÉTÉ 42"), ["42", "grüße", "été"]);
        assert!(tokens(" --- /// ").is_empty());
        assert_eq!(
            query_tokens("/etc/passwd"),
            Some(vec!["etc".into(), "passwd".into()])
        );
        assert_eq!(query_tokens("  *  "), None);
    }

    #[test]
    fn long_runs_are_cut() {
        let long = "a".repeat(500);
        assert_eq!(tokens(&long)[0].len(), MAX_TOKEN_CHARS);
    }

    #[test]
    fn snippets_mark_matches_and_cut_long_bodies() {
        let wanted = query_tokens("passwd").unwrap();
        assert_eq!(snippet("cat /etc/passwd\n", &wanted), "cat /etc/«passwd»");
        let body = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let s = snippet(&format!("{body} PASSWD tail"), &wanted);
        assert!(s.starts_with('…'), "{s}");
        assert!(s.contains("«PASSWD»"), "{s}");
        assert!(s.contains("w37 w38 w39 «PASSWD» tail"), "{s}");
        let s = snippet(&format!("passwd {body}"), &wanted);
        assert!(s.starts_with("«passwd» w0"), "{s}");
        assert!(s.ends_with('…'), "{s}");
        assert_eq!(snippet("", &wanted), "");
    }
}
