//! `cargo xtask`: the project's build, run and test entry points.
//!
//! ```text
//! cargo xtask setup            install the tools the build needs (idempotent)
//! cargo xtask build            dashboard (dist/) + release backend
//! cargo xtask run              build, then run the demo
//! cargo xtask test             everything CI checks
//! cargo xtask fuzz [--seconds N]
//! cargo xtask bench            every backend benchmark
//! ```

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod precompress;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const WASM_BINDGEN_VERSION: &str = "0.2.130";
const TRUNK_VERSION: &str = "0.21.14";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Roundtable's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the wasm target, wasm-bindgen-cli, trunk and Chromium if missing.
    Setup,
    /// Build the dashboard into dist/ and the release backend.
    Build,
    /// Build, then run the demo (directory + dashboard) until Ctrl-C.
    Run,
    /// Formatting, lints, unit, browser and end-to-end tests.
    Test,
    /// Fuzz every target in fuzz/ for --seconds each (needs the nightly toolchain).
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Run every backend benchmark (release).
    Bench,
}

fn main() {
    let cli = Cli::parse();
    let x = Xtask::new();
    let result = match cli.task {
        Task::Setup => x.setup(),
        Task::Build => x.build(),
        Task::Run => x.run(),
        Task::Test => x.test(),
        Task::Fuzz { seconds } => x.fuzz(seconds),
        Task::Bench => x.bench(),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

struct Xtask {
    /// The workspace root: every command runs there.
    root: PathBuf,
    /// `$CARGO_HOME/bin`, where `cargo install` puts tools; put first on PATH.
    cargo_bin: PathBuf,
}

impl Xtask {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
            .to_path_buf();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .unwrap_or_else(|| PathBuf::from(".cargo"));
        Xtask {
            root,
            cargo_bin: cargo_home.join("bin"),
        }
    }

    fn dist(&self) -> PathBuf {
        self.root.join("dist")
    }

    /// A command run from the workspace root, with `$CARGO_HOME/bin` on PATH.
    fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.cargo_bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            c.env("PATH", joined);
        }
        c
    }

    /// `cargo ARGS`, through rustup's proxy so the toolchain can be chosen.
    fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd("cargo");
        c.args(args);
        c
    }

    /// The stdout of `cmd`, or None if it cannot run or fails.
    fn output(&self, mut cmd: Command) -> Option<String> {
        let out = cmd.stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    // ---- setup -------------------------------------------------------------
    /// NVIDIA FLARE's own `binary_proto`, the interoperability peer of the
    /// file-transfer tests: one virtual environment under target/, made
    /// once and reused (only `test` needs it).
    fn nvflare_venv(&self) -> Result<()> {
        let venv = self.root.join("target").join("nvflare-venv");
        let python = venv.join("bin").join("python");
        let probe = self.cmd_with(
            python.to_str().unwrap_or("python"),
            ["-c", "import nvflare.fuel.hci.binary_proto"],
        );
        if python.exists() && self.output(probe).is_some() {
            println!("setup: nvflare present (target/nvflare-venv)");
            return Ok(());
        }
        run(
            "setup: python venv for nvflare",
            &mut self.cmd_with("python3", ["-m", "venv", venv.to_str().unwrap_or_default()]),
        )?;
        run(
            "setup: pip install nvflare",
            &mut self.cmd_with(
                venv.join("bin").join("pip").to_str().unwrap_or("pip"),
                ["install", "--quiet", "nvflare"],
            ),
        )
    }

    fn setup(&self) -> Result<()> {
        let mut installed = Vec::new();

        let targets = self
            .output(self.cmd_with("rustup", ["target", "list", "--installed"]))
            .context("`rustup target list --installed` failed: is rustup installed?")?;
        if !targets.lines().any(|l| l.trim() == WASM_TARGET) {
            run(
                "setup: wasm target",
                &mut self.cmd_with("rustup", ["target", "add", WASM_TARGET]),
            )?;
            installed.push(WASM_TARGET.to_string());
        }

        if !self.has_version(
            "wasm-bindgen",
            &format!("wasm-bindgen {WASM_BINDGEN_VERSION}"),
        ) {
            // Not --locked: the CLI's own lock file pins crates that no longer build.
            run(
                "setup: wasm-bindgen-cli",
                &mut self.cargo([
                    "install",
                    "wasm-bindgen-cli",
                    "--version",
                    WASM_BINDGEN_VERSION,
                ]),
            )?;
            installed.push(format!("wasm-bindgen-cli {WASM_BINDGEN_VERSION}"));
        }

        if !self.has_version("trunk", &format!("trunk {TRUNK_VERSION}")) {
            run(
                "setup: trunk",
                &mut self.cargo(["install", "--locked", "trunk", "--version", TRUNK_VERSION]),
            )?;
            installed.push(format!("trunk {TRUNK_VERSION}"));
        }

        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            let is_root = self
                .output(self.cmd_with("id", ["-u"]))
                .is_some_and(|s| s.trim() == "0");
            if !is_root {
                bail!(
                    "Chromium and chromedriver are missing ({CHROMIUM}, {CHROMEDRIVER}); install them with:\n  \
                     sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver"
                );
            }
            run(
                "setup: apt-get update",
                &mut self.cmd_with("apt-get", ["update"]),
            )?;
            run(
                "setup: chromium",
                self.cmd_with("apt-get", ["install", "-y", "chromium", "chromium-driver"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            installed.push("chromium chromium-driver".into());
        }

        // Trunk builds offline: every crate must be in the local cache first.
        run("setup: cargo fetch", &mut self.cargo(["fetch", "--quiet"]))?;

        if installed.is_empty() {
            println!("setup: all tools present");
        } else {
            println!("setup: installed {}", installed.join(", "));
        }
        Ok(())
    }

    fn cmd_with<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd(program);
        c.args(args);
        c
    }

    /// Whether `tool --version` prints a line starting with `expected`.
    fn has_version(&self, tool: &str, expected: &str) -> bool {
        self.output(self.cmd_with(tool, ["--version"]))
            .is_some_and(|v| {
                v.lines()
                    .any(|l| l.trim() == expected || l.starts_with(&format!("{expected} ")))
            })
    }

    // ---- build / run -------------------------------------------------------

    fn trunk_build(&self) -> Result<()> {
        // The `wasm-release` profile strips symbol names (~30% of the wasm;
        // there is no usable wasm-opt to do it later).
        run(
            "trunk build --release",
            &mut self.cmd_with("trunk", ["build", "--release"]),
        )?;
        self.report_sizes()
    }

    fn build(&self) -> Result<()> {
        self.setup()?;
        self.trunk_build()?;
        run(
            "cargo build --release -p roundtable",
            &mut self.cargo(["build", "--release", "-p", "roundtable"]),
        )
    }

    fn run(&self) -> Result<()> {
        self.build()?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| self.root.join(d))
            .unwrap_or_else(|| self.root.join("target"));
        let bin = target.join("release/roundtable");
        header("roundtable demo --dist dist");
        let mut demo = self.cmd(&bin);
        demo.args(["demo", "--dist"]).arg(self.dist());
        exec(demo)
    }

    /// Writes the compressed copies the node serves (`precompress.rs`) and
    /// prints the size of the dashboard's wasm and JavaScript: raw, and as
    /// they cross the network (brotli, and gzip for clients without it).
    fn report_sizes(&self) -> Result<()> {
        let sizes = precompress::precompress(&self.dist())?;
        let shown: Vec<_> = sizes
            .iter()
            .filter(|s| {
                matches!(
                    s.file.extension().and_then(OsStr::to_str),
                    Some("wasm" | "js")
                )
            })
            .collect();
        if shown.is_empty() {
            bail!("trunk build produced no .wasm or .js in dist/");
        }
        let row = |name: &str, raw, br, gz| {
            println!(
                "  {name:<48} {:>9} raw {:>9} brotli {:>9} gzip",
                human(raw),
                human(br),
                human(gz)
            )
        };
        for s in &shown {
            row(
                &s.file.file_name().unwrap_or_default().to_string_lossy(),
                s.raw,
                s.br,
                s.gz,
            );
        }
        let sum = |f: fn(&precompress::Sizes) -> usize| shown.iter().map(|s| f(s)).sum::<usize>();
        row(
            "dashboard wasm + js",
            sum(|s| s.raw),
            sum(|s| s.br),
            sum(|s| s.gz),
        );
        Ok(())
    }

    // ---- test --------------------------------------------------------------

    fn test(&self) -> Result<()> {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        let mut timings: Vec<(&str, Duration)> = Vec::new();
        let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let start = Instant::now();
            let result = f();
            timings.push((name, start.elapsed()));
            if result.is_err() {
                print_timings(&timings);
            }
            result.with_context(|| format!("step `{name}` failed"))
        };

        step("setup", &mut || {
            self.setup()?;
            self.nvflare_venv()
        })?;
        step("fmt", &mut || {
            run(
                "cargo fmt --all --check",
                &mut self.cargo(["fmt", "--all", "--check"]),
            )
        })?;
        step("clippy", &mut || {
            run(
                "cargo clippy --workspace --all-targets -- -D warnings",
                &mut self.cargo([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )
        })?;
        step("clippy-wasm", &mut || {
            run(
                "cargo clippy -p roundtable-frontend --target wasm32-unknown-unknown --all-targets -- -D warnings",
                &mut self.cargo([
                    "clippy",
                    "-p",
                    "roundtable-frontend",
                    "--target",
                    WASM_TARGET,
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )
        })?;
        step("unit-tests", &mut || {
            // The whole workspace natively, the dashboard's pure logic included.
            run(
                "cargo test --workspace",
                &mut self.cargo(["test", "--workspace"]),
            )
        })?;
        step("trunk-build", &mut || self.trunk_build())?;
        step("wasm-tests", &mut || {
            // --nocapture: the tests print their timings (FIGURE lines).
            run(
                "cargo test -p roundtable-frontend --target wasm32-unknown-unknown (headless Chromium)",
                self.cargo([
                    "test",
                    "-p",
                    "roundtable-frontend",
                    "--target",
                    WASM_TARGET,
                    "--",
                    "--nocapture",
                ])
                .env("CHROMEDRIVER", &chromedriver),
            )
        })?;
        step("e2e", &mut || {
            // One browser at a time: real processes and Chromium on a small machine.
            run(
                "cargo test -p roundtable --test browser --test dashboard --test secure_dashboard --test transfer_dashboard --test training_dashboard --test chat_dashboard -- --ignored (dashboard end to end)",
                self.cargo([
                    "test",
                    "-p",
                    "roundtable",
                    "--test",
                    "browser",
                    "--test",
                    "dashboard",
                    "--test",
                    "secure_dashboard",
                    "--test",
                    "transfer_dashboard",
                    "--test",
                    "training_dashboard",
                    "--test",
                    "chat_dashboard",
                    "--",
                    "--ignored",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env("ROUNDTABLE_DIST", self.dist())
                .env("CHROMEDRIVER", &chromedriver),
            )
        })?;

        print_timings(&timings);
        println!("xtask test: all steps passed");
        Ok(())
    }

    // ---- fuzz / bench ------------------------------------------------------

    fn fuzz(&self, seconds: u64) -> Result<()> {
        let nightly = |args: &[&str]| {
            let mut c = self.cmd("cargo");
            // An explicit +toolchain beats the one `cargo xtask` ran under.
            c.env_remove("RUSTUP_TOOLCHAIN").arg("+nightly").args(args);
            c
        };
        if self.output(nightly(&["fuzz", "--version"])).is_none() {
            run(
                "cargo install cargo-fuzz",
                &mut self.cargo(["install", "cargo-fuzz"]),
            )?;
        }
        // Every target under fuzz/fuzz_targets/, each for `seconds`.
        let listed = self
            .output(nightly(&["fuzz", "list"]))
            .context("cargo +nightly fuzz list")?;
        let targets: Vec<&str> = listed.split_whitespace().collect();
        if targets.is_empty() {
            bail!("cargo fuzz list found no fuzz targets");
        }
        for target in targets {
            let time = format!("-max_total_time={seconds}");
            run(
                &format!("cargo +nightly fuzz run {target} -- {time}"),
                &mut nightly(&["fuzz", "run", target, "--", &time]),
            )?;
        }
        Ok(())
    }

    fn bench(&self) -> Result<()> {
        run(
            "cargo bench -p roundtable --benches (every benchmark)",
            &mut self.cargo(["bench", "-p", "roundtable", "--benches"]),
        )
    }
}

fn header(title: &str) {
    println!("\n==> {title}");
    let _ = std::io::stdout().flush();
}

/// Runs `cmd` with inherited stdio under a one-line header; fails naming the step.
fn run(title: &str, cmd: &mut Command) -> Result<()> {
    header(title);
    let status = cmd
        .status()
        .with_context(|| format!("`{title}`: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("`{title}` failed ({status})");
    }
    Ok(())
}

/// Becomes `cmd` (Unix), so that Ctrl-C goes straight to it and its exit
/// status is ours; elsewhere, runs it and waits.
#[cfg(unix)]
fn exec(mut cmd: Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {:?}", cmd.get_program()))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}

fn print_timings(timings: &[(&str, Duration)]) {
    println!("\nstep timings:");
    for (name, d) in timings {
        println!("  {name:<12} {:>7.1} s", d.as_secs_f64());
    }
    let total: Duration = timings.iter().map(|(_, d)| *d).sum();
    println!("  {:<12} {:>7.1} s", "total", total.as_secs_f64());
}

fn human(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
