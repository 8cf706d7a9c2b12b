//! `type = "command"`: an external program (a training script, a vendor's export tool)
//! run with its arguments, environment and working directory; its output goes to the
//! run's log, and a non-zero exit fails the run.
//!
//! `{slot_start}`, `{slot_end}`, `{slot_date}` and `{slot_ms}` in `args` and `env` name
//! the run's slot. The program is killed when the run times out or the host stops: on
//! Linux also when the host dies without stopping (`kill -9`, a crash), so that the run
//! the next start hands back runs alone, not beside the one the dead host left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{CheckContext, JobError, JobKind, Produced, RunContext, RunLog};
use crate::component::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandJob {
    /// The program: a path (relative to the config's directory when it has a `/`) or a
    /// name looked up in `PATH`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Set for the program, beside the host's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where it runs (relative to the config's directory); the config's directory if unset.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
}

impl CommandJob {
    fn program(&self, base: &Path) -> PathBuf {
        if self.command.contains('/') {
            base.join(&self.command)
        } else {
            PathBuf::from(&self.command)
        }
    }
}

impl JobKind for CommandJob {
    fn problems(&self, context: &CheckContext<'_>) -> Vec<Problem> {
        let base = context.base;
        let mut problems = Vec::new();
        if self.command.contains('/') && !self.program(base).is_file() {
            problems.push(Problem {
                message: format!("`command` {} is not a file", self.program(base).display()),
                hint: "a path is relative to the config file's directory".into(),
            });
        }
        if let Some(dir) = &self.working_dir
            && !base.join(dir).is_dir()
        {
            problems.push(Problem {
                message: format!("`working_dir` {} is not a directory", base.join(dir).display()),
                hint: "a path is relative to the config file's directory".into(),
            });
        }
        problems
    }

    fn run(self: Arc<Self>, run: RunContext) -> BoxFuture<'static, Result<Produced, JobError>> {
        async move {
            let program = self.program(&run.base_dir);
            let mut command = tokio::process::Command::new(&program);
            command
                .args(self.args.iter().map(|arg| run.slot.expand(arg)))
                .envs(self.env.iter().map(|(k, v)| (k, run.slot.expand(v))))
                .current_dir(match &self.working_dir {
                    Some(dir) => run.path(dir),
                    None => run.base_dir.clone(),
                })
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            // Its own process group: what it starts in turn is stopped with it.
            #[cfg(unix)]
            command.process_group(0);
            let mut child = spawn(command).await.map_err(|error| {
                JobError::new(format!("cannot start {}: {error}", program.display()))
            })?;
            let out = tokio::spawn(copy_lines(child.stdout.take(), run.log.clone()));
            let err = tokio::spawn(copy_lines(child.stderr.take(), run.log.clone()));
            let group = child.id();
            let status = tokio::select! {
                status = child.wait() => status,
                () = run.cancel.cancelled() => {
                    kill_group(group);
                    let _ = child.kill().await;
                    return Err(JobError::new(format!("{} was stopped", program.display())));
                }
            }
            .map_err(|error| JobError::new(format!("waiting for {}: {error}", program.display())))?;
            // Whatever it left running in the background would hold its output open.
            kill_group(group);
            let _ = out.await;
            let _ = err.await;
            if status.success() {
                Ok(Produced::default())
            } else {
                Err(JobError::new(format!("{} exited with {status}", program.display())))
            }
        }
        .boxed()
    }
}

/// Kill the process group a job's program leads (itself and what it started).
fn kill_group(leader: Option<u32>) {
    #[cfg(target_os = "linux")]
    if let Some(pid) = leader.and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: a plain system call; a group already gone is ESRCH, ignored.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = leader;
}

/// Start `command`, tied to the host's life where the system allows it.
#[cfg(not(target_os = "linux"))]
async fn spawn(mut command: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    command.spawn()
}

/// Start `command` so that it is killed when the host process dies (`PR_SET_PDEATHSIG`).
/// That signal comes when the *thread* that started the program ends, and a runtime's
/// threads may end before the process does: programs are started from one thread kept
/// for that, which lives as long as the process.
#[cfg(target_os = "linux")]
async fn spawn(mut command: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    use std::sync::{Mutex, OnceLock, mpsc};

    type Request = (
        tokio::process::Command,
        tokio::runtime::Handle,
        tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
    );
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

    let host = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The host died before the line above: nothing would signal its death.
            if libc::getppid() as u32 != host {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("job-programs".into())
            .spawn(move || {
                for (mut command, runtime, started) in incoming {
                    // The child is reaped by the runtime of the run that asked.
                    let _runtime = runtime.enter();
                    let _ = started.send(command.spawn());
                }
            })
            .expect("a thread to start job programs from");
        Mutex::new(requests)
    });
    let (started, child) = tokio::sync::oneshot::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, tokio::runtime::Handle::current(), started))
        .map_err(|_| std::io::Error::other("the thread starting job programs is gone"))?;
    child
        .await
        .map_err(|_| std::io::Error::other("the thread starting job programs is gone"))?
}

async fn copy_lines(stream: Option<impl AsyncRead + Unpin>, log: RunLog) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.line(line);
    }
}
