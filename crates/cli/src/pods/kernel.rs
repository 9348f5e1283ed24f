//! Running `ip` and `nft` (Debian's iproute2 and nftables) and reading what exists.
//!
//! Commands, not netlink: what `up` does is what an operator would type, and each failure
//! names the command line and what it printed on stderr.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::plan::{Action, ETC_NETNS_DIR, HOSTS, NETNS_DIR, Object, RESOLV_CONF};

/// Why a command failed: the command line, its status and stderr.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}): {stderr}")]
pub struct CommandFailed {
    /// The command line.
    pub command: String,
    /// How it ended.
    pub status: String,
    /// What it printed on stderr, trimmed.
    pub stderr: String,
}

impl CommandFailed {
    /// Whether the command failed because what it creates exists already (EEXIST).
    pub fn exists(&self) -> bool {
        self.stderr.contains("File exists")
    }
}

/// Runs `argv` with `stdin` written to its standard input; Err names the command and stderr.
pub fn run(argv: &[String], stdin: Option<&str>) -> anyhow::Result<Result<(), CommandFailed>> {
    let (program, args) = argv.split_first().context("an empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{}` (is {program} installed?)", argv.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("writing to `{}`", argv.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", argv.join(" ")))?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(CommandFailed {
        command: argv.join(" "),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }))
}

/// Runs one planned action; any failure is an error naming it.
pub fn perform(action: &Action) -> anyhow::Result<()> {
    match action {
        Action::Run { argv, stdin } => Ok(run(argv, stdin.as_deref())??),
        Action::WriteEtc(dir) => write_etc(dir),
    }
}

fn write_etc(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, text) in [("resolv.conf", RESOLV_CONF), ("hosts", HOSTS)] {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Whether `object` exists now.
pub fn exists(object: &Object) -> anyhow::Result<bool> {
    Ok(match object {
        Object::Bridge(name) | Object::HostVeth(name) => {
            Path::new("/sys/class/net").join(name).exists()
        }
        Object::Netns(name) => Path::new(NETNS_DIR).join(name).exists(),
        Object::EtcDir(dir) => dir.exists(),
        Object::HostTable(name) => {
            let argv = strings(&["nft", "list", "table", "inet", name]);
            run(&argv, None)?.is_ok()
        }
    })
}

/// Removes `object` if it exists. An `EtcDir` outside `/etc/netns` is refused (a
/// `pods.json` edited by hand must not make `up` delete anything else).
pub fn remove(object: &Object) -> anyhow::Result<()> {
    if !exists(object)? {
        return Ok(());
    }
    let argv = match object {
        Object::Bridge(name) | Object::HostVeth(name) => strings(&["ip", "link", "del", name]),
        Object::Netns(name) => strings(&["ip", "netns", "del", name]),
        Object::HostTable(name) => strings(&["nft", "delete", "table", "inet", name]),
        Object::EtcDir(dir) => {
            if dir.parent() != Some(Path::new(ETC_NETNS_DIR)) {
                bail!(
                    "refusing to remove {}: not under {ETC_NETNS_DIR}",
                    dir.display()
                );
            }
            return std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing {}", dir.display()));
        }
    };
    match run(&argv, None)? {
        Ok(()) => Ok(()),
        // Gone meanwhile (a veth goes with its namespace): what we wanted.
        Err(_) if !exists(object)? => Ok(()),
        Err(failed) => Err(failed.into()),
    }
}

fn strings(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_is_named_with_its_stderr() {
        let argv = strings(&[
            "sh",
            "-c",
            "echo 'RTNETLINK answers: File exists' >&2; exit 2",
        ]);
        let failed = run(&argv, None).unwrap().unwrap_err();
        assert!(failed.exists());
        let text = failed.to_string();
        assert!(text.starts_with("`sh -c echo"), "{text}");
        assert!(text.contains("RTNETLINK answers: File exists"), "{text}");
        assert!(text.contains("exit status: 2"), "{text}");
        let cat = strings(&["sh", "-c", "test \"$(cat)\" = hello"]);
        assert!(run(&cat, Some("hello")).unwrap().is_ok());
        let missing = run(&strings(&["/nonexistent/ip"]), None).unwrap_err();
        assert!(format!("{missing:#}").contains("/nonexistent/ip"));
    }

    #[test]
    fn an_etc_dir_outside_etc_netns_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let error = remove(&Object::EtcDir(dir.path().to_owned())).unwrap_err();
        assert!(error.to_string().contains("refusing"), "{error}");
        assert!(dir.path().exists());
    }
}
