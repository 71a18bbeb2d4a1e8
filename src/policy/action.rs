//! What a request really does: the action the policy decides on, which is not always the
//! kube verb. A WebSocket `GET` to `pods/exec` runs a command, so it is `exec`, not `get`;
//! `nodes/*/proxy` reaches the kubelet, so it is `proxy` on `nodes/proxy`, never a read of
//! nodes; a patch of `pods/ephemeralcontainers` (`kubectl debug`) starts a shell, so it is
//! `debug`.

use super::RequestAttributes;

/// The action a request performs, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `exec`, `attach`, `portforward`, `proxy` or `debug` when the request is one of those,
    /// whatever its method; otherwise the kube verb (`get`, `list`, `create`, ...); for
    /// non-resource URLs the lowercase HTTP method.
    pub verb: String,
    /// The resource, group-qualified outside the core group and with any subresource:
    /// `pods`, `deployments.apps`, `pods/exec`, `nodes/proxy`, `deployments.apps/scale`; for
    /// non-resource URLs the path.
    pub resource: String,
    /// The namespace; empty for cluster-scoped requests and non-resource URLs.
    pub namespace: String,
    /// The object name; empty for collections.
    pub name: String,
}

/// Subresources that are actions of their own, named by the verb they become.
const STREAMING: &[(&str, &str)] = &[
    ("exec", "exec"),
    ("attach", "attach"),
    ("portforward", "portforward"),
    ("proxy", "proxy"),
];

/// Verbs that only read: these on `pods/ephemeralcontainers` stay what they are.
const READS: &[&str] = &["get", "list", "watch"];

impl Action {
    /// The action of a classified request.
    pub fn of(req: &RequestAttributes<'_>) -> Action {
        let info = req.info;
        if !info.is_resource {
            return Action {
                verb: info.verb.clone(),
                resource: info.path.clone(),
                namespace: String::new(),
                name: String::new(),
            };
        }
        let base = if info.api_group.is_empty() {
            info.resource.clone()
        } else {
            format!("{}.{}", info.resource, info.api_group)
        };
        // `/api/v1/proxy/nodes/n/...` (the old proxy verb) and `/api/v1/nodes/n/proxy/...`
        // reach the same place, so both become `proxy` on `nodes/proxy`.
        let subresource = if info.verb == "proxy" && info.subresource.is_empty() {
            "proxy"
        } else {
            info.subresource.as_str()
        };
        let verb = if let Some((_, verb)) = STREAMING.iter().find(|(s, _)| *s == subresource) {
            (*verb).to_owned()
        } else if info.resource == "pods"
            && info.api_group.is_empty()
            && subresource == "ephemeralcontainers"
            && !READS.contains(&info.verb.as_str())
        {
            // Adding an ephemeral container is how `kubectl debug` gets a shell in a pod.
            "debug".to_owned()
        } else {
            info.verb.clone()
        };
        let resource = if subresource.is_empty() {
            base
        } else {
            format!("{base}/{subresource}")
        };
        Action {
            verb,
            resource,
            namespace: info.namespace.clone(),
            name: info.name.clone(),
        }
    }

    /// The resource without its subresource: `pods` for `pods/exec`.
    pub fn parent(&self) -> &str {
        self.resource
            .split_once('/')
            .map_or(self.resource.as_str(), |(parent, _)| parent)
    }

    /// Whether the verb is one custody derives from the subresource rather than the method.
    pub fn is_derived(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "exec" | "attach" | "portforward" | "proxy" | "debug"
        )
    }

    /// How the action reads in a sentence: `exec pods/web`, `list secrets`, `get /healthz`.
    pub fn describe(&self) -> String {
        let resource = if self.is_derived() {
            self.parent()
        } else {
            &self.resource
        };
        if self.name.is_empty() {
            format!("{} {resource}", self.verb)
        } else {
            format!("{} {resource}/{}", self.verb, self.name)
        }
    }

    /// Where it happens: `in namespace N of cluster C`, or `in cluster C` when cluster-scoped.
    pub fn place(&self, cluster: &str) -> String {
        if self.namespace.is_empty() {
            format!("in cluster {cluster}")
        } else {
            format!("in namespace {} of cluster {cluster}", self.namespace)
        }
    }
}

impl super::Policy {
    /// The action of a request (see [`Action::of`]).
    pub fn action(req: &RequestAttributes<'_>) -> Action {
        Action::of(req)
    }
}
