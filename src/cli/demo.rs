//! `custody demo`: kube-sim, a development OIDC issuer and the gateway, on loopback, with a
//! kubeconfig for two people. The one command a newcomer runs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use custody::config::Config;
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::oidc_issuer::{DevIssuerConfig, OidcIssuer};
use custody_fixtures::pki::Pki;

use super::serve;

mod replicas;

/// Where the demo keeps its files and where the gateway listens.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The demo's directory: `kubeconfig`, `custody.toml`, certificates, `data/` (the gateway's
    /// audit trail and index) and `cluster/` (kube-sim's files, its native `audit.log` among them).
    #[arg(long, value_name = "DIR", default_value = "custody-demo")]
    dir: PathBuf,
    /// The gateway's address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// Run N gateway replicas in cluster mode instead of one: a throwaway PostgreSQL, an S3
    /// server (versitygw, built with Go on first use) and HAProxy (Debian's) in front of N
    /// `custody serve` processes. `DIR/replicas.json` names each replica's pid and URL.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9))]
    replicas: u8,
}

/// Starts everything, prints `ready` and what to try, and runs until interrupted.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "the demo runs a simulated cluster whose pods are processes on this host; it only listens on loopback"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir).context("cannot resolve --dir")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sim = KubeSim::start(KubeSimConfig::new(dir.join("cluster")))
        .await
        .context("cannot start kube-sim")?;
    let issuer = OidcIssuer::start(DevIssuerConfig::demo())
        .await
        .context("cannot start the development OIDC issuer")?;
    write(&dir.join("issuer-ca.crt"), issuer.ca_pem())?;
    let gateway_ca = write_gateway_certificates(&dir)?;

    if args.replicas > 1 {
        return demo_replicas(args, &dir, &issuer, &gateway_ca, sim).await;
    }
    let config_path = dir.join("custody.toml");
    write(&config_path, &demo_config(&dir, args.listen, issuer.url()))?;
    let config = Config::parse(&std::fs::read_to_string(&config_path)?, &|_| None)
        .map_err(|e| anyhow::anyhow!("the demo configuration is invalid:\n{e}"))?;
    let running = serve::start(&config).await?;

    let exe = std::env::current_exe().context("cannot find the custody executable")?;
    let gateway = format!("https://{}", running.addr);
    let config_home = dir.join("config");
    log_in_demo_people(&gateway, &gateway_ca, &config_home).await?;
    let kubeconfig = dir.join("kubeconfig");
    write(
        &kubeconfig,
        &demo_kubeconfig(&exe, &gateway, &gateway_ca, &config_home),
    )?;

    let text = hints(running.addr, &running.control_socket, &exe, &dir);

    // A reader that went away (a closed pipe) must not stop the demo: the hints are a courtesy.
    let mut stdout = std::io::stdout();
    let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);

    serve::wait_for_signal().await?;
    eprintln!("custody demo: stopping");
    running.shutdown().await;
    drop(issuer);
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The demo in cluster mode: the replicas behind the balancer, which the kubeconfig names.
async fn demo_replicas(
    args: &Args,
    dir: &Path,
    issuer: &OidcIssuer,
    gateway_ca: &str,
    sim: KubeSim,
) -> anyhow::Result<ExitCode> {
    if args.listen.port() != 0 {
        anyhow::bail!("with --replicas the balancer picks a free port; leave --listen out");
    }
    let n = usize::from(args.replicas);
    let (dir_owned, url) = (dir.to_owned(), issuer.url().to_owned());
    let replicas =
        tokio::task::spawn_blocking(move || replicas::Replicas::start(&dir_owned, n, &url))
            .await
            .context("the replicas' start-up failed")??;
    let exe = std::env::current_exe().context("cannot find the custody executable")?;
    let gateway = format!("https://{}", replicas.balancer);
    let config_home = dir.join("config");
    log_in_demo_people(&gateway, gateway_ca, &config_home).await?;
    write(
        &dir.join("kubeconfig"),
        &demo_kubeconfig(&exe, &gateway, gateway_ca, &config_home),
    )?;
    let mut text = String::new();
    let _ = writeln!(text, "ready {gateway}");
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "custody demo is running in cluster mode: kube-sim, a development OIDC issuer, and"
    );
    text.push_str(&replicas.summary(dir));
    let _ = writeln!(text);
    let _ = writeln!(text);
    let _ = writeln!(text, "In another terminal, try:");
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "  export KUBECONFIG={}",
        dir.join("kubeconfig").display()
    );
    let _ = writeln!(text, "  kubectl --context alice get pods");
    let _ = writeln!(text);
    text.push_str(&replicas.walkthrough(&exe, dir));
    let _ = writeln!(text);
    let _ = writeln!(text, "Press Ctrl-C to stop.");
    let mut stdout = std::io::stdout();
    let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
    serve::wait_for_signal().await?;
    eprintln!("custody demo: stopping");
    tokio::task::spawn_blocking(move || replicas.stop()).await?;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// What the demo prints once it is ready: the `ready` line and the commands to try.
#[allow(
    clippy::too_many_lines,
    reason = "the hints read top to bottom as they are printed"
)]
fn hints(addr: SocketAddr, control_socket: &Path, exe: &Path, dir: &Path) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "ready https://{addr}");
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "custody demo is running: kube-sim, a development OIDC issuer and the gateway."
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Web console: https://{addr}/custody/ui/   (log in as alice or bob; the browser will"
    );
    let _ = writeln!(
        text,
        "  warn about the demo's own certificate authorities: {} and {})",
        dir.join("gateway-ca.crt").display(),
        dir.join("issuer-ca.crt").display()
    );
    let _ = writeln!(text);
    let _ = writeln!(text, "In another terminal, try:");
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "  export KUBECONFIG={}",
        dir.join("kubeconfig").display()
    );
    let _ = writeln!(text, "  kubectl --context alice auth whoami");
    let _ = writeln!(text, "  kubectl --context alice get pods");
    let _ = writeln!(
        text,
        "  kubectl --context bob --as=carol auth whoami     # bob may impersonate"
    );
    let _ = writeln!(
        text,
        "  kubectl --context alice --as=carol auth whoami   # alice may not: 403"
    );
    let _ = writeln!(
        text,
        "  kubectl --context alice get secret db-credentials -o yaml   # values masked for alice"
    );
    let _ = writeln!(
        text,
        "  kubectl --context bob get secret db-credentials -o yaml     # bob (sre) sees them"
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "alice needs someone's approval to exec into kube-system (docs/policy.md):"
    );
    let _ = writeln!(
        text,
        "  kubectl --context alice exec -n kube-system coredns-sim -- hostname   # refused: how to ask"
    );
    let _ = writeln!(
        text,
        "  {} request create --context alice -n kube-system --pod coredns-sim --for 15m --reason \"INC-1: DNS\"",
        exe.display()
    );
    let _ = writeln!(
        text,
        "  {} request list --context bob --state pending",
        exe.display()
    );
    let _ = writeln!(
        text,
        "  {} request approve --context bob ID   # then alice's exec works, for that pod only",
        exe.display()
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "  {} audit --data-dir {}",
        exe.display(),
        dir.join("data").display()
    );
    let _ = writeln!(
        text,
        "  {} sessions live --data-dir {}   # sessions running now, via {}",
        exe.display(),
        dir.join("data").display(),
        control_socket.display()
    );
    let _ = writeln!(
        text,
        "  tail -n 3 {}   # the cluster's own audit log names the real person",
        dir.join("cluster/audit.log").display()
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Recorded sessions are served at https://{addr}/custody/v1 (docs/api.md): bob (group sre)"
    );
    let _ = writeln!(
        text,
        "is an auditor and sees every session; alice sees only the sessions she started."
    );
    let _ = writeln!(
        text,
        "  {exe} key --data-dir {data} > key.pem && {exe} verify {data}/recordings/ID.cast.zst --key key.pem",
        exe = exe.display(),
        data = dir.join("data").display()
    );
    let _ = writeln!(text);
    let _ = writeln!(text, "Press Ctrl-C to stop.");
    text
}

/// Logs alice and bob in at the gateway exactly as `custody login --server URL --profile NAME
/// --login-hint NAME` would (the document from `/.well-known/custody`, the authorization code
/// flow with PKCE against the development issuer, which logs the hinted user in without a form;
/// custody follows the redirects itself), keeping their tokens under `config_home`, where the
/// kubeconfig's `custody credential --server URL --profile NAME` finds and refreshes them.
async fn log_in_demo_people(
    gateway: &str,
    gateway_ca: &str,
    config_home: &Path,
) -> anyhow::Result<()> {
    use custody::login::flow::Provider;
    use custody::login::store::{Store, StoredLogin};
    use custody::login::trust::{GatewayTrust, fetch_document};
    let store = Store::at(config_home.join("custody").join("logins"));
    let document = fetch_document(gateway, &GatewayTrust::Ca(gateway_ca.to_owned()))
        .await
        .context("cannot read the demo gateway's login document")?;
    for person in ["alice", "bob"] {
        let provider = Provider::discover(&document, None)
            .await?
            .with_login_hint(Some(person.to_owned()));
        let login = provider
            .login_unattended(gateway, &document, std::time::Duration::from_secs(30))
            .await
            .with_context(|| format!("cannot log {person} in"))?;
        store.save(&StoredLogin {
            profile: Some(person.to_owned()),
            ..login
        })?;
    }
    Ok(())
}

fn demo_config(dir: &Path, listen: SocketAddr, issuer: &str) -> String {
    let d = |p: &str| toml_string(&dir.join(p));
    format!(
        r#"# The configuration `custody demo` generated; `custody serve --config` accepts it as is.
data_dir = {data}
gateway_id = "custody-demo"

[server]
listen = "{listen}"
tls_cert = {cert}
tls_key = {key}

[admin]
listen = "127.0.0.1:0"

[audit]
mode = "strict"

[[clusters]]
name = "demo"
kubeconfig = {cluster}

[[oidc]]
issuer = "{issuer}"
client_id = "custody"
ca_file = {issuer_ca}
# kube-sim's rules grant the groups dev and sre, so groups are not prefixed here.
groups_prefix = ""

# What `custody login` needs, published at /.well-known/custody (the demo logs alice and bob
# in through it when it starts).
[login]
issuer = "{issuer}"
client_id = "custody"
ca_file = {gateway_ca}

# bob (group sre) audits: he sees and downloads every recorded session through the sessions
# API; alice sees only her own.
[access]
auditor_groups = ["sre"]

# Who may do what: the example policy of docs/policy.md. alice (group dev) reads everything,
# works in `default`, sees secret values masked, and needs someone's approval to exec into
# `kube-system`; bob (group sre) may do everything, sees real values, approves requests and
# may impersonate.
{policy}"#,
        data = d("data"),
        cert = d("gateway.crt"),
        key = d("gateway.key"),
        cluster = d("cluster/gateway.kubeconfig"),
        issuer_ca = d("issuer-ca.crt"),
        gateway_ca = d("gateway-ca.crt"),
        policy = custody::policy::EXAMPLE_POLICY,
    )
}

fn demo_kubeconfig(exe: &Path, gateway: &str, ca_pem: &str, config_home: &Path) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut users = String::new();
    for user in ["alice", "bob"] {
        // Writing to a String cannot fail.
        let _ = write!(
            users,
            "- name: {user}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {exe}\n      args: [credential, --server, {gateway}, --profile, {user}]\n      env:\n      - name: XDG_CONFIG_HOME\n        value: {config_home}\n      interactiveMode: Never\n      provideClusterInfo: false\n",
            exe = yaml_string(&exe.display().to_string()),
            config_home = yaml_string(&config_home.display().to_string()),
        );
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: custody-demo\n  cluster:\n    server: {gateway}/clusters/demo\n    certificate-authority-data: {ca}\nusers:\n{users}contexts:\n- name: alice\n  context: {{cluster: custody-demo, user: alice, namespace: default}}\n- name: bob\n  context: {{cluster: custody-demo, user: bob, namespace: default}}\ncurrent-context: alice\n"
    )
}

/// Generates a CA and a serving certificate for the gateway; returns the CA PEM.
fn write_gateway_certificates(dir: &Path) -> anyhow::Result<String> {
    let pki = Pki::generate_named(
        "custody-demo-ca",
        "custody-demo",
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
    )
    .context("cannot generate the gateway's certificates")?;
    write(&dir.join("gateway-ca.crt"), &pki.ca_pem())?;
    write(&dir.join("gateway.crt"), &pki.server().cert)?;
    write(&dir.join("gateway.key"), &pki.server().key)?;
    Ok(pki.ca_pem())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
