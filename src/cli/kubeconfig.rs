//! `custody kubeconfig`: a kubeconfig for a gateway's clusters, whose user runs `custody
//! credential --server URL` as its exec plugin. Written to a file, to stdout, or merged into
//! the user's kubeconfig keeping every other entry.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use custody::login::LoginDocument;
use custody::login::store::{Store, normalize_server};
use custody::login::trust::fetch_document;
use serde_yaml::{Mapping, Value};

use super::login::ServerArgs;

/// What to write.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Only this cluster (repeatable); every cluster the gateway serves by default.
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    cluster: Vec<String>,
    /// Every cluster the gateway serves (the default).
    #[arg(long)]
    all: bool,
    /// The context's name, for a single cluster (default: the cluster's name).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Merge into $KUBECONFIG (its first file) or ~/.kube/config, keeping the other entries.
    #[arg(long, conflicts_with = "output")]
    merge: bool,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Writes the kubeconfig.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let server = normalize_server(&args.server.server);
    let profile = args.server.profile.as_deref();
    let stored = Store::from_env()?.load(&server, profile)?;
    let document = if let (Some(stored), None, None) = (
        &stored,
        &args.server.ca_file,
        &args.server.trust_ca_fingerprint,
    ) {
        stored.document.clone()
    } else {
        let trust = args.server.trust(stored.as_ref())?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(fetch_document(&server, &trust))?
    };
    let names: Vec<&str> = if args.cluster.is_empty() {
        document.clusters.iter().map(|c| c.name.as_str()).collect()
    } else {
        for name in &args.cluster {
            if !document.clusters.iter().any(|c| &c.name == name) {
                anyhow::bail!("the gateway serves no cluster {name:?}");
            }
        }
        args.cluster.iter().map(String::as_str).collect()
    };
    if args.context.is_some() && names.len() != 1 {
        anyhow::bail!("--context names one context: give one --cluster");
    }
    let exe = std::env::current_exe().context("cannot find the custody executable")?;
    let generated = kubeconfig(
        &server,
        &document,
        &names,
        args.context.as_deref(),
        profile,
        &exe,
    );
    if args.merge {
        let path = default_kubeconfig()?;
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not a kubeconfig", path.display()))?,
            Ok(_) => Value::Mapping(Mapping::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Mapping(Mapping::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let merged = merge(existing, &generated);
        write_private(&path, &serde_yaml::to_string(&merged)?)?;
        eprintln!("Merged into {}.", path.display());
    } else if let Some(path) = &args.output {
        write_private(path, &serde_yaml::to_string(&generated)?)?;
        eprintln!("Wrote {}.", path.display());
    } else {
        print!("{}", serde_yaml::to_string(&generated)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The kubeconfig for `names`, with one user for the gateway.
fn kubeconfig(
    server: &str,
    document: &LoginDocument,
    names: &[&str],
    context: Option<&str>,
    profile: Option<&str>,
    exe: &Path,
) -> Value {
    let host = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/');
    let user = match profile {
        Some(profile) => format!("custody-{profile}@{host}"),
        None => format!("custody@{host}"),
    };
    let mut plugin_args = vec![
        "credential".to_owned(),
        "--server".to_owned(),
        server.to_owned(),
    ];
    if let Some(profile) = profile {
        plugin_args.extend(["--profile".to_owned(), profile.to_owned()]);
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(&document.ca_pem);
    let mut clusters = Vec::new();
    let mut contexts = Vec::new();
    for name in names {
        let path = document
            .clusters
            .iter()
            .find(|c| c.name == *name)
            .map_or_else(|| format!("/clusters/{name}"), |c| c.path.clone());
        clusters.push(yaml(serde_json::json!({
            "name": name,
            "cluster": {"server": format!("{server}{path}"), "certificate-authority-data": ca},
        })));
        contexts.push(yaml(serde_json::json!({
            "name": context.unwrap_or(name),
            "context": {"cluster": name, "user": user},
        })));
    }
    let users = vec![yaml(serde_json::json!({
        "name": user,
        "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": exe.display().to_string(),
            "args": plugin_args,
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": false,
        }},
    }))];
    let current = contexts
        .first()
        .and_then(|c| c.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    yaml(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": current,
    }))
}

fn yaml(value: serde_json::Value) -> Value {
    serde_yaml::to_value(value).unwrap_or(Value::Null)
}

/// `generated`'s clusters, users and contexts replace same-named ones in `existing`; the rest
/// of `existing` stays. `current-context` is set only where there was none.
fn merge(mut existing: Value, generated: &Value) -> Value {
    if !existing.is_mapping() {
        existing = Value::Mapping(Mapping::new());
    }
    for (key, default) in [("apiVersion", "v1"), ("kind", "Config")] {
        if existing.get(key).is_none() {
            existing[key] = Value::String(default.to_owned());
        }
    }
    for section in ["clusters", "users", "contexts"] {
        let mut list = existing
            .get(section)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for entry in generated
            .get(section)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let name = entry.get("name");
            match list.iter_mut().find(|e| e.get("name") == name) {
                Some(slot) => slot.clone_from(entry),
                None => list.push(entry.clone()),
            }
        }
        existing[section] = Value::Sequence(list);
    }
    let has_current = existing
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if !has_current && let Some(current) = generated.get("current-context") {
        existing["current-context"] = current.clone();
    }
    existing
}

fn default_kubeconfig() -> anyhow::Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_deref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// Writes `text` to `path` atomically, mode 0600.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_entries_and_replaces_ours() {
        let existing: Value = serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://o}\n- name: prod\n  cluster: {server: https://old}\nusers:\n- name: me\n  user: {token: x}\ncontexts: []\ncurrent-context: other\n",
        )
        .unwrap();
        let doc = LoginDocument {
            issuer: "https://idp".into(),
            client_id: "custody".into(),
            scopes: vec!["openid".into()],
            issuer_ca_pem: None,
            ca_pem: "CA".into(),
            clusters: vec![custody::login::document::LoginCluster {
                name: "prod".into(),
                path: "/clusters/prod".into(),
            }],
        };
        let generated = kubeconfig(
            "https://gw:8443",
            &doc,
            &["prod"],
            None,
            None,
            Path::new("/bin/custody"),
        );
        let merged = merge(existing, &generated);
        let clusters = merged["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(
            clusters[1]["cluster"]["server"],
            "https://gw:8443/clusters/prod"
        );
        assert_eq!(merged["users"].as_sequence().unwrap().len(), 2);
        assert_eq!(merged["current-context"], "other");
        let exec = &merged["users"][1]["user"]["exec"];
        assert_eq!(exec["interactiveMode"], "IfAvailable");
        assert_eq!(exec["args"][2], "https://gw:8443");
    }
}
