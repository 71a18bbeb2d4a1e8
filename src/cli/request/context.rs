//! Where `custody request` finds its gateway when no `--server` is given: the kubeconfig
//! context kubectl uses (or `--context`), whose server URL is the gateway's
//! (`https://HOST:PORT/clusters/NAME`), whose CA is the gateway's, and whose user's token (a
//! static token, or the exec plugin `custody kubeconfig` writes, run as kubectl would run it) is
//! the person's. So wherever `kubectl exec` works, `custody request` works without more flags.
//!
//! Read by hand rather than through `kube::Config`: only these four fields are needed, and the
//! exec plugin must run non-interactively, which is a setting kube's loader does not expose.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use base64::Engine;
use secrecy::SecretString;
use serde::Deserialize;

/// What a kubeconfig context says about the gateway and the person.
pub struct Gateway {
    /// `https://HOST:PORT` (the cluster path removed).
    pub server: String,
    /// The cluster as the gateway names it (from `/clusters/NAME`).
    pub cluster: Option<String>,
    /// The CA's PEM, when the kubeconfig carries one.
    pub ca_pem: Option<Vec<u8>>,
    /// The person's bearer token.
    pub token: SecretString,
    /// The kubeconfig file read.
    pub file: PathBuf,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default, rename = "current-context")]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<ContextRef>>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct ContextRef {
    cluster: String,
    user: String,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    exec: Option<Exec>,
}

#[derive(Deserialize)]
struct Exec {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
}

#[derive(Deserialize)]
struct EnvVar {
    name: String,
    value: String,
}

/// The kubeconfig file kubectl would read first: `--kubeconfig`, else the first entry of
/// `KUBECONFIG`, else `~/.kube/config`.
pub fn kubeconfig_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("no --server, no KUBECONFIG and no HOME")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// The gateway and token of `context` (or the current context) in `file`.
pub fn gateway(file: &Path, context: Option<&str>) -> anyhow::Result<Gateway> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the kubeconfig {}", file.display()))?;
    let config: Kubeconfig = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", file.display()))?;
    let name = context.unwrap_or(&config.current_context);
    if name.is_empty() {
        bail!(
            "{} has no current context; pass --context or --server",
            file.display()
        );
    }
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("{} has no context {name:?}", file.display()))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == ctx.value.cluster)
        .with_context(|| format!("context {name:?} names a missing cluster"))?;
    let user = config
        .users
        .iter()
        .find(|u| u.name == ctx.value.user)
        .map(|u| &u.value);
    let (server, gateway_cluster) = split_server(&cluster.value.server).with_context(|| {
        format!(
            "context {name:?} does not point at a custody gateway (its server {} has no \
             /clusters/NAME path); pass --server",
            cluster.value.server
        )
    })?;
    let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
        (Some(data), _) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("the kubeconfig's certificate-authority-data is not base64")?,
        ),
        (None, Some(path)) => {
            let path = file.parent().unwrap_or(Path::new(".")).join(path);
            Some(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        (None, None) => None,
    };
    let token = match user {
        Some(User {
            token: Some(token), ..
        }) => SecretString::from(token.clone()),
        Some(User {
            exec: Some(exec), ..
        }) => run_exec(exec)?,
        _ => bail!(
            "context {name:?} has no token or exec credential plugin; pass --token-file or \
             set CUSTODY_TOKEN"
        ),
    };
    Ok(Gateway {
        server,
        cluster: gateway_cluster,
        ca_pem,
        token,
        file: file.to_owned(),
    })
}

/// `https://h:p/clusters/demo` → (`https://h:p`, `demo`); any path before `/clusters/` is
/// kept (a gateway behind a path prefix).
fn split_server(server: &str) -> Option<(String, Option<String>)> {
    let (base, rest) = server.split_once("/clusters/")?;
    let name = rest.trim_end_matches('/');
    let name = (!name.is_empty() && !name.contains('/')).then(|| name.to_owned());
    Some((base.to_owned(), name))
}

/// Runs the exec credential plugin as kubectl would, non-interactively, and returns its token.
fn run_exec(exec: &Exec) -> anyhow::Result<SecretString> {
    let api_version = exec
        .api_version
        .clone()
        .unwrap_or_else(|| "client.authentication.k8s.io/v1".to_owned());
    let info = serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    let mut command = Command::new(&exec.command);
    command
        .args(&exec.args)
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    for var in exec.env.iter().flatten() {
        command.env(&var.name, &var.value);
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run the credential plugin {}", exec.command))?;
    if !out.status.success() {
        bail!(
            "the credential plugin {} failed ({}); log in again (custody login)",
            exec.command,
            out.status
        );
    }
    let credential: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("the credential plugin did not print an ExecCredential")?;
    let token = credential["status"]["token"]
        .as_str()
        .context("the credential plugin's ExecCredential has no status.token")?;
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_url_is_the_server_without_its_cluster_path() {
        assert_eq!(
            split_server("https://127.0.0.1:8443/clusters/demo"),
            Some(("https://127.0.0.1:8443".into(), Some("demo".into())))
        );
        assert_eq!(
            split_server("https://gw.example/prefix/clusters/prod/"),
            Some(("https://gw.example/prefix".into(), Some("prod".into())))
        );
        assert_eq!(split_server("https://10.0.0.1:6443"), None);
    }

    #[test]
    fn a_context_with_a_static_token_names_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let ca = base64::engine::general_purpose::STANDARD.encode("PEM");
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster:\n    server: https://h:1/clusters/demo\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: t0k\ncontexts:\n- name: a\n  context: {{cluster: c, user: u}}\n"
            ),
        )
        .unwrap();
        let g = gateway(&file, None).unwrap();
        assert_eq!(g.server, "https://h:1");
        assert_eq!(g.cluster.as_deref(), Some("demo"));
        assert_eq!(g.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert!(gateway(&file, Some("nope")).is_err());
    }
}
