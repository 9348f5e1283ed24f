//! `meshwork policy explain`: one decision — from the files, or from the running mesh's
//! snapshot identified by its hash — with the policy, rule and matcher that decided it.
//! With `--state-dir` it also asks the deciding sidecar (the target's for inbound, the
//! caller's for egress) which policy hash it enforces, over its admin endpoint. Inbound, it
//! also names the `HTTPRoute`/`GRPCRoute` rule the caller's sidecar applies (`route.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use identity::SpiffeId;
use policy::{AuditOutcome, Decision, EgressRequest, Engine, Host, NormalizedPath, Request};

mod json;

use super::route::RouteVerdict;
use super::{PolicyFiles, RunningPolicies, SidecarPolicies, caller_id};
use json::to_json;

/// Arguments of `meshwork policy explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The caller: a workload name or a spiffe:// ID. Inbound: omit it for a caller without a
    /// verified identity.
    #[arg(long)]
    from: Option<String>,
    /// Inbound: the mesh service being called (e.g. billing).
    #[arg(long, required_unless_present = "egress", conflicts_with = "egress")]
    to: Option<String>,
    /// Explain an egress decision: REQUEST is then HOST:PORT [METHOD PATH].
    #[arg(long, requires = "from")]
    egress: bool,
    /// An inbound request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Directory of resources (workloads and policies).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Decide with the policies the mesh running in this state directory serves (its
    /// snapshot, named by hash), say whether --dir's files match them, and ask the deciding
    /// sidecar (--to's for inbound, --from's for egress) which policy hash it enforces.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Inbound: METHOD PATH. Egress: HOST:PORT, then METHOD PATH for plain-HTTP egress.
    #[arg(required = true, num_args = 1..=3, value_name = "REQUEST")]
    request: Vec<String>,
}

/// The request being explained.
enum Question {
    Inbound {
        caller: Option<SpiffeId>,
        service: String,
        method: String,
        raw_path: String,
        path: NormalizedPath,
        headers: Vec<(String, String)>,
    },
    Egress {
        caller: SpiffeId,
        host: Host,
        port: u16,
        http: Option<(String, String, NormalizedPath)>,
    },
}

/// Where the engine came from.
// Built once per command and never moved: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Source {
    Files(PolicyFiles),
    Running {
        running: RunningPolicies,
        files: anyhow::Result<PolicyFiles>,
        /// The deciding sidecar's workload name and what its admin endpoint said.
        sidecar: Option<(String, anyhow::Result<SidecarPolicies>)>,
    },
}

/// Explains one decision; exit 0 when allowed, 1 when denied.
pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let source = match &args.state_dir {
        None => Source::Files(PolicyFiles::load(&args.dir)?),
        Some(state) => {
            let running = RunningPolicies::fetch(state)?;
            let sidecar = deciding_workload(&args, &running).map(|name| {
                let asked = SidecarPolicies::fetch(state, &name);
                (name, asked)
            });
            Source::Running {
                running,
                files: PolicyFiles::load(&args.dir),
                sidecar,
            }
        }
    };
    let question = Question::parse(&args, |from| source.caller(from))?;
    let decision = question.decide(source.engine());
    let route = question.route(&source);
    if args.json {
        let mut json = to_json(&question, &decision, &source);
        if let Some(route) = &route {
            json["route"] = route.json();
        }
        println!("{json:#}");
    } else {
        let mut text = to_text(&question, &decision, &source);
        if let Some(route) = &route {
            text += &route.text();
        }
        print!("{text}");
    }
    Ok(if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The workload whose sidecar makes this decision: the target's for inbound, the caller's
/// for egress (a spiffe:// caller is looked up among the running sidecars).
fn deciding_workload(args: &ExplainArgs, running: &RunningPolicies) -> Option<String> {
    if !args.egress {
        return args.to.as_ref().map(|to| to.to_ascii_lowercase());
    }
    let from = args.from.as_deref()?;
    if !from.starts_with("spiffe://") {
        return Some(from.to_owned());
    }
    running
        .workloads
        .iter()
        .find(|(_, id)| id.as_str() == from)
        .map(|(name, _)| name.clone())
}

impl Source {
    fn engine(&self) -> &Engine {
        match self {
            Source::Files(files) => &files.engine,
            Source::Running { running, .. } => &running.engine,
        }
    }

    /// Resolves `--from`: the running mesh's identities first, then the files'.
    fn caller(&self, from: &str) -> anyhow::Result<SpiffeId> {
        match self {
            Source::Files(files) => {
                caller_id(from, |n| files.workload_id(n), &files.workload_names())
            }
            Source::Running { running, files, .. } => {
                let from_files = |n: &str| files.as_ref().ok().and_then(|f| f.workload_id(n));
                let known: Vec<String> = running.workloads.keys().cloned().collect();
                caller_id(
                    from,
                    |n| running.workloads.get(n).cloned().or_else(|| from_files(n)),
                    &known,
                )
            }
        }
    }
}

impl Question {
    /// Inbound: the route rule the caller's sidecar applies (egress has no routes).
    fn route(&self, source: &Source) -> Option<RouteVerdict> {
        let Question::Inbound {
            service,
            method,
            path,
            headers,
            ..
        } = self
        else {
            return None;
        };
        let traffic = match source {
            Source::Files(files) => files.set.traffic().remove(service),
            Source::Running { running, .. } => running.traffic.get(service).cloned(),
        };
        Some(RouteVerdict::select(
            traffic.as_ref(),
            method,
            path.as_str(),
            headers,
        ))
    }

    fn parse(
        args: &ExplainArgs,
        caller: impl Fn(&str) -> anyhow::Result<SpiffeId>,
    ) -> anyhow::Result<Question> {
        let from = args.from.as_deref().map(caller).transpose()?;
        match (args.egress, from, &args.to, args.request.as_slice()) {
            (true, Some(caller), _, [dest, rest @ ..]) => {
                if !args.headers.is_empty() {
                    bail!(
                        "--header is for inbound requests; egress decisions do not look at headers"
                    );
                }
                let (host, port) = parse_destination(dest)?;
                let http = match rest {
                    [] => None,
                    [method, path] => Some((method.clone(), path.clone(), parse_path(path)?)),
                    _ => bail!("egress: expected HOST:PORT, optionally followed by METHOD PATH"),
                };
                Ok(Question::Egress {
                    caller,
                    host,
                    port,
                    http,
                })
            }
            (false, caller, Some(service), [method, raw_path]) => Ok(Question::Inbound {
                caller,
                service: service.clone(),
                method: method.clone(),
                path: parse_path(raw_path)?,
                raw_path: raw_path.clone(),
                headers: args
                    .headers
                    .iter()
                    .map(|h| parse_header(h))
                    .collect::<anyhow::Result<_>>()?,
            }),
            (false, ..) => {
                bail!("inbound: expected METHOD PATH, e.g. `--to billing POST /charges`")
            }
            (true, ..) => bail!(
                "egress: expected --from and HOST:PORT, e.g. `--egress --from billing api.stripe.com:443`"
            ),
        }
    }

    fn decide(&self, engine: &Engine) -> Decision {
        match self {
            Question::Inbound {
                caller,
                service,
                method,
                path,
                headers,
                ..
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                engine.authorize(&Request {
                    target_service: service,
                    caller: caller.as_ref(),
                    method,
                    path,
                    headers: headers.as_slice(),
                })
            }
            Question::Egress {
                caller,
                host,
                port,
                http,
            } => engine.egress(&EgressRequest {
                caller,
                host,
                port: *port,
                method: http.as_ref().map(|(m, ..)| m.as_str()),
                path: http.as_ref().map(|(.., p)| p),
            }),
        }
    }

    /// `POST /charges to billing from spiffe://…` / `CONNECT api.stripe.com:443 from …`.
    fn describe(&self) -> String {
        match self {
            Question::Inbound {
                caller,
                service,
                method,
                path,
                ..
            } => {
                let from = caller.as_ref().map_or_else(
                    || "a caller without identity".to_owned(),
                    ToString::to_string,
                );
                format!("{method} {path} to {service} from {from}")
            }
            Question::Egress {
                caller,
                host,
                port,
                http: None,
            } => format!("CONNECT {host}:{port} from {caller}"),
            Question::Egress {
                caller,
                host,
                port,
                http: Some((method, _, path)),
            } => {
                format!("{method} http://{host}:{port}{path} from {caller}")
            }
        }
    }

    /// The raw path when normalising changed it.
    fn respelled(&self) -> Option<(&str, &NormalizedPath)> {
        let (raw, path) = match self {
            Question::Inbound { raw_path, path, .. } => (raw_path.as_str(), path),
            Question::Egress {
                http: Some((_, raw, path)),
                ..
            } => (raw.as_str(), path),
            Question::Egress { http: None, .. } => return None,
        };
        (raw != path.as_str()).then_some((raw, path))
    }
}

fn parse_path(raw: &str) -> anyhow::Result<NormalizedPath> {
    NormalizedPath::parse(raw).with_context(|| format!("path {raw:?} is refused by the normaliser"))
}

/// `host:port`, `[v6]:port`.
fn parse_destination(dest: &str) -> anyhow::Result<(Host, u16)> {
    let Some((host, port)) = dest.rsplit_once(':') else {
        bail!("egress destination {dest:?} needs a port: HOST:PORT, e.g. api.stripe.com:443");
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("{port:?} in {dest:?} is not a port"))?;
    let host: Host = host
        .parse()
        .with_context(|| format!("{host:?} is neither a DNS name nor an IP literal"))?;
    Ok((host, port))
}

fn parse_header(header: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = header.split_once(':') else {
        bail!("header {header:?} must be written `name: value`");
    };
    Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
}

fn to_text(question: &Question, decision: &Decision, source: &Source) -> String {
    let verdict = if decision.allowed { "allow" } else { "deny" };
    let reason = &decision.reason;
    let kind = serde_json::to_value(reason.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut out = format!("decision  {verdict} ({kind})\n");
    out += &format!("policy    {}\n", reason.policy.as_deref().unwrap_or("-"));
    out += &format!(
        "rule      {}\n",
        reason
            .rule
            .map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    out += &format!("matcher   {}\n", reason.matcher);
    for note in &decision.audit {
        let would = match note.outcome {
            AuditOutcome::WouldDeny => "would deny",
            AuditOutcome::WouldAllow => "would allow",
        };
        out += &format!("audit     {would}: {}\n", note.reason);
    }
    out += &format!("request   {}\n", question.describe());
    if let Some((raw, path)) = question.respelled() {
        out += &format!("path      {raw:?} normalised to {path}\n");
    }
    match source {
        Source::Files(files) => {
            out += &format!(
                "engine    {} (files in {})\n",
                files.engine.hash(),
                files.dir.display()
            );
        }
        Source::Running {
            running,
            files,
            sidecar,
        } => {
            let at = running.state_dir.display();
            out += &format!(
                "engine    {} (running mesh in {at}, snapshot version {})\n",
                running.hash, running.version
            );
            out += &format!("files     {}\n", files_verdict(running, files));
            if let Some((name, asked)) = sidecar {
                out += &format!(
                    "sidecar   {}\n",
                    sidecar_verdict(name, asked, running, files)
                );
            }
        }
    }
    out
}

fn files_verdict(running: &RunningPolicies, files: &anyhow::Result<PolicyFiles>) -> String {
    match files {
        Ok(f) if f.engine.hash().to_string() == running.hash => {
            format!(
                "{} match the running mesh ({})",
                f.dir.display(),
                f.engine.hash()
            )
        }
        Ok(f) => format!(
            "{} DIFFER from the running mesh: they hash to {} (not reloaded yet, or other files)",
            f.dir.display(),
            f.engine.hash()
        ),
        Err(e) => format!("not compared: {e:#}"),
    }
}

/// `running sidecar billing has policy hash … (matches the files; …)`.
fn sidecar_verdict(
    name: &str,
    asked: &anyhow::Result<SidecarPolicies>,
    running: &RunningPolicies,
    files: &anyhow::Result<PolicyFiles>,
) -> String {
    let sidecar = match asked {
        Ok(sidecar) => sidecar,
        Err(e) => return format!("{name}: not compared: {e:#}"),
    };
    let hash = &sidecar.snapshot.policy_hash;
    let vs_files = match files {
        Ok(f) if f.engine.hash().to_string() == *hash => "matches the files".to_owned(),
        Ok(f) => format!("DIFFERS from the files, which hash to {}", f.engine.hash()),
        Err(_) => "files not compared".to_owned(),
    };
    let vs_control = if *hash == running.hash {
        "same as the control plane".to_owned()
    } else {
        format!(
            "the control plane serves {}: not caught up yet",
            running.hash
        )
    };
    format!(
        "running sidecar {name} has policy hash {hash} ({vs_files}; {vs_control}; \
         snapshot version {}, admin {})",
        sidecar.snapshot.version, sidecar.admin
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_and_headers_parse() {
        let (host, port) =
            parse_destination("api.stripe.com:443").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((host.to_string().as_str(), port), ("api.stripe.com", 443));
        let (host, port) = parse_destination("[::1]:8443").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((host.to_string().as_str(), port), ("[::1]", 8443));
        assert!(parse_destination("api.stripe.com").is_err());
        assert!(parse_destination("api.stripe.com:https").is_err());
        assert_eq!(
            parse_header("X-Debug: 1").ok(),
            Some(("x-debug".to_owned(), "1".to_owned()))
        );
        assert!(parse_header("x-debug").is_err());
    }
}
