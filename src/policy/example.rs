//! The example policy of `docs/policy.md`, which `custody demo` uses; kept here so the tests
//! decide on the very text the documentation shows (a test checks they are the same).

/// The `[policy]` section for two teams: `dev` (alice) reads everything and works in
/// `default`, with approval for shells in `kube-system`; `sre` (bob) does everything, sees
/// secret values, approves requests and may impersonate.
pub const EXAMPLE_POLICY: &str = r#"[policy]

[[policy.roles]]
name = "dev"
groups = ["dev"]
# Secret values are masked for dev (the default); keys and metadata stay visible.
show_secrets = false

# Read almost everything, everywhere. Reading is never exec: a WebSocket GET to pods/exec
# is the action "exec", and nodes/NAME/proxy is "proxy", so this rule allows neither.
[[policy.roles.rules]]
actions = ["get", "list", "watch"]
resources = ["*"]

# Shells, attach and port-forward in default; "exec" also covers kubectl debug.
[[policy.roles.rules]]
actions = ["exec", "attach", "portforward"]
resources = ["pods"]
namespaces = ["default"]

# Shells in kube-system only with someone else's approval, for at most two hours.
[[policy.roles.rules]]
effect = "approval"
actions = ["exec", "attach"]
resources = ["pods"]
namespaces = ["kube-system"]
grant_groups = ["custody:jit-kube-system"]
max_grant = "2h"

# kubectl auth whoami
[[policy.roles.rules]]
actions = ["create"]
resources = ["selfsubjectreviews.authentication.k8s.io"]

[[policy.roles.rules]]
actions = ["create", "update", "patch"]
resources = ["secrets"]
namespaces = ["default"]

[[policy.roles]]
name = "sre"
groups = ["sre"]
show_secrets = true
approve = true

[[policy.roles.rules]]
actions = ["*"]
resources = ["*"]

[[policy.roles.rules]]
actions = ["*"]
paths = ["*"]

# Any user except system: ones, alone or with the group dev.
[[policy.roles.impersonate]]
users = ["*"]
groups = ["dev"]
"#;
