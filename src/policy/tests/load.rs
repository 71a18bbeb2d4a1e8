//! The checks at load: every problem at once, each naming its role and rule, and no
//! `system:` identity handed out without break-glass.

use super::*;

fn problems(text: &str) -> Vec<String> {
    PolicyConfig::from_section(text).unwrap().problems()
}

#[test]
fn the_example_policy_is_valid_and_is_what_the_docs_show() {
    assert_eq!(problems(EXAMPLE_POLICY), Vec::<String>::new());
    let docs = include_str!("../../../docs/policy.md");
    assert!(
        docs.contains(EXAMPLE_POLICY.trim_end()),
        "docs/policy.md must show EXAMPLE_POLICY verbatim"
    );
}

#[test]
fn system_identities_need_break_glass() {
    let text = |break_glass: bool, users: &str, groups: &str, grant: &str| {
        format!(
            r#"[policy]
[[policy.roles]]
name = "r"
groups = ["ops"]
break_glass = {break_glass}
[[policy.roles.rules]]
effect = "approval"
actions = ["exec"]
resources = ["pods"]
grant_groups = [{grant}]
[[policy.roles.impersonate]]
users = [{users}]
groups = [{groups}]
"#
        )
    };
    assert!(problems(&text(false, r#""*""#, r#""*""#, r#""jit""#)).is_empty());
    let found = problems(&text(
        false,
        r#""system:admin""#,
        r#""system:masters", "system:mast*""#,
        r#""system:masters""#,
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|p| p
                .starts_with("policy.roles[0] (\"r\").impersonate[0]: users: \"system:admin\"")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|p| p.contains("\"system:mast*\"")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("policy.roles[0] (\"r\").rules[0]: grant_groups")),
        "{found:#?}"
    );
    assert!(
        found.iter().all(|p| p.contains("break_glass")),
        "{found:#?}"
    );
    assert!(
        problems(&text(
            true,
            r#""system:admin""#,
            r#""system:masters""#,
            r#""system:masters""#
        ))
        .is_empty()
    );
    let refused = Policy::new(
        &PolicyConfig::from_section(&text(false, r#""*""#, r#""system:*""#, r#""a""#)).unwrap(),
    );
    assert!(refused.unwrap_err().to_string().contains("system:*"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let found = problems(
        r#"[policy]
[[policy.roles]]
name = "a"
[[policy.roles.rules]]
actions = ["port-forward", "get"]
resources = ["pods"]
ports = [22]
[[policy.roles.rules]]
effect = "approval"
actions = ["exec"]
resources = ["pods"]
paths = ["/x"]
max_grant = "forever"
namespaces = []
[[policy.roles.rules]]
actions = ["get"]
grant_groups = ["jit"]
[[policy.roles.impersonate]]
groups = ["dev"]
[[policy.roles.redact]]
name = "bad"
pattern = "(unclosed"
[[policy.roles]]
name = "a"
users = ["oidc:*"]
"#,
    );
    let expect = [
        "policy.roles[0] (\"a\"): names no users or groups",
        "policy.roles[0] (\"a\").rules[0]: actions: unknown action \"port-forward\" (write portforward)",
        "policy.roles[0] (\"a\").rules[0]: ports: only port-forward rules",
        "policy.roles[0] (\"a\").rules[1]: a rule is about resources or about paths, not both",
        "policy.roles[0] (\"a\").rules[1]: namespaces: an empty list matches nothing",
        "policy.roles[0] (\"a\").rules[1]: max_grant:",
        "policy.roles[0] (\"a\").rules[2]: name resources",
        "policy.roles[0] (\"a\").rules[2]: grant_groups and max_grant belong",
        "policy.roles[0] (\"a\").impersonate[0]: users:",
        "policy.roles[0] (\"a\").redact[0]:",
        "policy.roles[1] (\"a\"): the name is used twice",
        "policy.roles[1] (\"a\").users: names are matched exactly",
    ];
    for e in expect {
        assert!(
            found.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn unknown_keys_and_bad_ports_are_refused_by_the_parser() {
    let err = PolicyConfig::from_section(
        "[policy]\n[[policy.roles]]\nname = \"a\"\nshow_secret = true\n",
    )
    .unwrap_err();
    assert!(err.contains("show_secret"), "{err}");
    for ports in ["0", "70000", "\"9-1\"", "\"x\""] {
        let text = format!(
            "[policy]\n[[policy.roles]]\nname = \"a\"\n[[policy.roles.rules]]\nports = [{ports}]\n"
        );
        assert!(PolicyConfig::from_section(&text).is_err(), "{ports}");
    }
    let ok = "[policy]\n[[policy.roles]]\nname = \"a\"\n[[policy.roles.rules]]\nports = [\"8000-8099\", 22]\n";
    let rule = &PolicyConfig::from_section(ok).unwrap().roles[0].rules[0];
    assert_eq!(
        rule.ports,
        [
            PortRange {
                first: 8000,
                last: 8099
            },
            PortRange {
                first: 22,
                last: 22
            }
        ]
    );
    assert_eq!(rule.namespaces, ["*"], "defaults apply to rules");
}

#[test]
fn globs() {
    use super::super::pattern::{glob, identity};
    assert!(glob("*", ""));
    assert!(glob("team-*", "team-a"));
    assert!(!glob("team-*", "xteam-a"));
    assert!(glob("*-prod", "eu-prod"));
    assert!(!glob("*-prod", "eu-prod-2"));
    assert!(glob("a*b*c", "abc") && glob("a*b*c", "aXbYbZc"));
    assert!(!glob("a*b*c", "acb"));
    assert!(glob("aa*aa", "aaaa") && !glob("aa*aa", "aaa"));
    assert!(glob("/healthz*", "/healthz/ready"));
    assert!(!glob("pods", "pods/exec"));
    let star = vec!["*".to_owned()];
    assert!(identity(&star, "carol"));
    assert!(!identity(&star, "system:masters"));
    assert!(!identity(&["sys*".to_owned()], "system:masters"));
    assert!(identity(
        &["system:serviceaccount:ci:*".to_owned()],
        "system:serviceaccount:ci:deployer"
    ));
}
