//! From a kubectl-like command (`exec pod/web`, `get secrets`, `portforward pod/web 8080`) to
//! the request the gateway would see, for `custody policy test`.
//!
//! The request path is built as kubectl would send it and then classified by the gateway's own
//! classifier, so the test decides on exactly what a real request would be decided on.

use crate::classify::{RequestInfo, classify};

/// A request as the gateway would receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The classified request.
    pub info: RequestInfo,
    /// The HTTP method kubectl uses.
    pub method: String,
    /// Whether kubectl would upgrade the connection (exec, attach, port-forward).
    pub upgrade: bool,
    /// The ports asked for (port-forward).
    pub ports: Vec<u16>,
}

/// A resource kubectl knows by other names.
struct Known {
    plural: &'static str,
    names: &'static [&'static str],
    group: &'static str,
    version: &'static str,
    namespaced: bool,
}

const fn known(
    plural: &'static str,
    names: &'static [&'static str],
    group: &'static str,
    version: &'static str,
    namespaced: bool,
) -> Known {
    Known {
        plural,
        names,
        group,
        version,
        namespaced,
    }
}

/// The resources people name most, with kubectl's singular and short names.
const KNOWN: &[Known] = &[
    known("pods", &["pod", "po"], "", "v1", true),
    known("services", &["service", "svc"], "", "v1", true),
    known("secrets", &["secret"], "", "v1", true),
    known("configmaps", &["configmap", "cm"], "", "v1", true),
    known("serviceaccounts", &["serviceaccount", "sa"], "", "v1", true),
    known(
        "persistentvolumeclaims",
        &["persistentvolumeclaim", "pvc"],
        "",
        "v1",
        true,
    ),
    known("events", &["event", "ev"], "", "v1", true),
    known("endpoints", &["ep"], "", "v1", true),
    known("namespaces", &["namespace", "ns"], "", "v1", false),
    known("nodes", &["node", "no"], "", "v1", false),
    known(
        "persistentvolumes",
        &["persistentvolume", "pv"],
        "",
        "v1",
        false,
    ),
    known("deployments", &["deployment", "deploy"], "apps", "v1", true),
    known("replicasets", &["replicaset", "rs"], "apps", "v1", true),
    known("statefulsets", &["statefulset", "sts"], "apps", "v1", true),
    known("daemonsets", &["daemonset", "ds"], "apps", "v1", true),
    known("jobs", &["job"], "batch", "v1", true),
    known("cronjobs", &["cronjob", "cj"], "batch", "v1", true),
    known(
        "ingresses",
        &["ingress", "ing"],
        "networking.k8s.io",
        "v1",
        true,
    ),
    known(
        "networkpolicies",
        &["networkpolicy", "netpol"],
        "networking.k8s.io",
        "v1",
        true,
    ),
    known("roles", &["role"], "rbac.authorization.k8s.io", "v1", true),
    known(
        "rolebindings",
        &["rolebinding"],
        "rbac.authorization.k8s.io",
        "v1",
        true,
    ),
    known(
        "clusterroles",
        &["clusterrole"],
        "rbac.authorization.k8s.io",
        "v1",
        false,
    ),
    known(
        "clusterrolebindings",
        &["clusterrolebinding"],
        "rbac.authorization.k8s.io",
        "v1",
        false,
    ),
    known(
        "selfsubjectreviews",
        &["selfsubjectreview"],
        "authentication.k8s.io",
        "v1",
        false,
    ),
    known(
        "selfsubjectaccessreviews",
        &["selfsubjectaccessreview"],
        "authorization.k8s.io",
        "v1",
        false,
    ),
    known(
        "customresourcedefinitions",
        &["customresourcedefinition", "crd", "crds"],
        "apiextensions.k8s.io",
        "v1",
        false,
    ),
];

/// A resource type as the API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// The plural resource, e.g. `deployments`.
    pub plural: String,
    /// The API group, empty for the core group.
    pub group: String,
    /// The version used in the path.
    pub version: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// Resolves `pod`, `po`, `deploy.apps`, `deployments.apps`, `widgets.example.com`. Unknown
/// types are taken as written: a namespaced plural in the group after the first `.` (`v1`).
pub fn resource_type(text: &str) -> ResourceType {
    let (name, group) = text.split_once('.').unwrap_or((text, ""));
    let found = KNOWN.iter().find(|k| {
        (k.plural == name || k.names.contains(&name)) && (group.is_empty() || group == k.group)
    });
    match found {
        Some(k) => ResourceType {
            plural: k.plural.to_owned(),
            group: k.group.to_owned(),
            version: k.version.to_owned(),
            namespaced: k.namespaced,
        },
        None => ResourceType {
            plural: name.to_owned(),
            group: group.to_owned(),
            version: "v1".to_owned(),
            namespaced: true,
        },
    }
}

/// How kubectl sends one verb.
struct Shape {
    method: &'static str,
    upgrade: bool,
    /// The verb addresses one object, so the command must name it.
    needs_name: bool,
    /// The subresource the verb implies, if any.
    subresource: Option<&'static str>,
}

fn shape(verb: &str) -> Result<Shape, String> {
    let plain = |method, needs_name| Shape {
        method,
        upgrade: false,
        needs_name,
        subresource: None,
    };
    let on = |method, upgrade, subresource| Shape {
        method,
        upgrade,
        needs_name: true,
        subresource: Some(subresource),
    };
    Ok(match verb {
        "get" | "list" | "watch" => plain("GET", false),
        "create" => plain("POST", false),
        "update" => plain("PUT", true),
        "patch" => plain("PATCH", true),
        "delete" | "deletecollection" => plain("DELETE", false),
        "exec" => on("GET", true, "exec"),
        "attach" => on("GET", true, "attach"),
        "portforward" | "port-forward" => on("GET", true, "portforward"),
        // Adding an ephemeral container is what `kubectl debug POD` sends.
        "debug" => on("PATCH", false, "ephemeralcontainers"),
        "proxy" => on("GET", false, "proxy"),
        "logs" | "log" => on("GET", false, "log"),
        other => {
            return Err(format!(
                "unknown verb {other:?}: use get, list, watch, create, update, patch, delete, deletecollection, exec, attach, portforward, debug, proxy or logs"
            ));
        }
    })
}

/// Port-forward ports; `LOCAL:REMOTE` counts as the remote port, which is what reaches the pod.
fn parse_ports(ports: &[String]) -> Result<Vec<u16>, String> {
    ports
        .iter()
        .map(|p| {
            let remote = p.rsplit(':').next().unwrap_or(p);
            remote
                .parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{p:?} is not a port"))
        })
        .collect()
}

/// Builds the request for `VERB RESOURCE[/NAME[/SUBRESOURCE]] [PORT...]` in `namespace`
/// (ignored for cluster-scoped types). `RESOURCE` may also be a non-resource path
/// (`/healthz`). Port-forward ports may be written `LOCAL:REMOTE`; the remote port counts.
pub fn request(
    verb: &str,
    target: &str,
    ports: &[String],
    namespace: &str,
) -> Result<Request, String> {
    let port_numbers = parse_ports(ports)?;
    if !port_numbers.is_empty() && !matches!(verb, "portforward" | "port-forward") {
        return Err("ports only go with portforward".into());
    }
    if target.starts_with('/') {
        let method = verb.to_ascii_uppercase();
        let info = classify(&method, target, None).map_err(|e| e.to_string())?;
        return Ok(Request {
            info,
            method,
            upgrade: false,
            ports: port_numbers,
        });
    }
    let mut segments = target.splitn(3, '/');
    let kind = segments.next().unwrap_or_default();
    let name = segments.next().unwrap_or_default();
    let shape = shape(verb)?;
    let sub = shape
        .subresource
        .unwrap_or_else(|| segments.next().unwrap_or_default());
    if kind.is_empty() || (name.is_empty() && target.contains('/')) {
        return Err(format!(
            "{target:?} is not a resource like pods, pod/NAME or nodes/NAME/proxy"
        ));
    }
    let kind = resource_type(kind);
    if shape.needs_name && name.is_empty() {
        return Err(format!("{verb} needs an object: {}/NAME", kind.plural));
    }
    let mut path = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    if kind.namespaced {
        path.push_str("/namespaces/");
        path.push_str(namespace);
    }
    path.push('/');
    path.push_str(&kind.plural);
    let mut query: Vec<String> = port_numbers.iter().map(|p| format!("ports={p}")).collect();
    if verb == "watch" {
        query.push("watch=true".into());
    }
    // A create is sent to the collection, and list and watch name their object by selector,
    // as kubectl does; everything else addresses the object.
    if !name.is_empty() && matches!(verb, "list" | "watch") && sub.is_empty() {
        query.push(format!("fieldSelector=metadata.name%3D{name}"));
    } else if !name.is_empty() && (verb != "create" || !sub.is_empty()) {
        path.push('/');
        path.push_str(name);
        if !sub.is_empty() {
            path.push('/');
            path.push_str(sub);
        }
    }
    let info = classify(shape.method, &path, Some(&query.join("&"))).map_err(|e| e.to_string())?;
    Ok(Request {
        info,
        method: shape.method.to_owned(),
        upgrade: shape.upgrade,
        ports: port_numbers,
    })
}
