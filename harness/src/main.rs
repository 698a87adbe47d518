//! The `netboot-harness` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netboot_harness::cli::run;
use netboot_harness::guest::Accel;
use netboot_harness::report::timeline;
use netboot_harness::report::{self, Summary};
use netboot_harness::support::stdout::print;
use netboot_harness::support::{paths, tools};
use netboot_harness::{image, scenario};

#[derive(Parser)]
#[command(
    name = "netboot-harness",
    version,
    about = "Boot QEMU guests through real iPXE, DHCP, HTTP and iSCSI, and check every link",
    long_about = "Runs YAML scenarios: each starts QEMU guests in a private network namespace, \
netboots them through real iPXE against dnsmasq, an HTTP server and tgtd, and checks the serial \
console and the services' own records step by step. Artifacts of every run go to \
target/netboot-harness/runs/<scenario>/<time>/."
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios end to end; exits non-zero if any did not do what it expects.
    Run {
        /// Scenario files (scenarios/*.yaml).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        #[command(flatten)]
        boot: BootArgs,
        /// After the last step (met or failed), keep the lab, services and guests up and say
        /// how to enter them; Ctrl-C ends the run. One scenario only.
        #[arg(long)]
        keep: bool,
        /// After the last step, put a guest's serial console on this terminal (the first node,
        /// or --console=NODE); Ctrl-] detaches, Ctrl-C ends the run. One scenario only; needs a
        /// terminal on stdin.
        #[arg(long, value_name = "NODE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
        console: Option<String>,
    },
    /// Run one scenario N times and report each step's median and spread (writes bench-*.json).
    Bench {
        scenario: PathBuf,
        /// Runs of each arm (harness-driven and bare), interleaved.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The console step whose time bare QEMU runs (same lab, services and command line; no
        /// login proxy, no step engine) are compared against.
        #[arg(long, default_value = netboot_harness::cli::bench::COMPARE_STEP)]
        compare_step: String,
        /// A second scenario, benchmarked the same way after the first, whose steps of the same
        /// name are then printed beside the first's (e.g. `--beside scenarios/uefi-ibft-e1000.yaml`
        /// for BIOS and UEFI medians of the same chain).
        #[arg(long)]
        beside: Option<PathBuf>,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Validate scenarios without starting anything.
    Check {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// List the scenarios with their tier and descriptions.
    List {
        /// Only the scenarios of this tier of the test suite.
        #[arg(long, value_enum)]
        tier: Option<scenario::Tier>,
        /// Print each scenario's file path alone, one a line (for scripts).
        #[arg(long)]
        paths: bool,
    },
    /// Guest images: build, list.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Check the host: tools with their Debian packages, namespaces, accelerator, free disk;
    /// exits non-zero, with the fix, when something required is missing.
    Doctor {
        /// The runs folder to check for space (default: target/netboot-harness/runs).
        #[arg(long)]
        runs_dir: Option<PathBuf>,
    },
    /// Show the report of finished runs again; --svg draws their timelines on one time scale.
    Report {
        /// Run directories (target/netboot-harness/runs/<scenario>/<time>).
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// Write one SVG comparing all the given runs to this file.
        #[arg(long, value_name = "OUT")]
        svg: Option<PathBuf>,
    },
    /// Runs the lab side of a run inside its namespaces (started by `run`).
    #[command(name = "__lab", hide = true)]
    Lab {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long)]
        disk: PathBuf,
        #[arg(long)]
        accel: String,
        #[arg(long)]
        timeout_scale: f64,
        #[arg(long, default_value = "")]
        timeout_why: String,
        #[arg(long)]
        host_netns: u64,
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        console: Option<String>,
        #[arg(long)]
        bare_until: Option<String>,
    },
}

/// How boots run, shared by `run` and `bench`.
#[derive(clap::Args)]
struct BootArgs {
    /// tcg, kvm or auto (KVM only if a probe shows it can run firmware).
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Multiply every step's timeout, e.g. 2 on a slow machine (on top of the stretch TCG runs
    /// get on a loaded host, see `timeouts`).
    #[arg(long, default_value_t = 1.0)]
    timeout_scale: f64,
    /// Where run directories go (default: target/netboot-harness/runs).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
}

impl BootArgs {
    fn options(self) -> miette::Result<run::RunOptions> {
        if !(self.timeout_scale > 0.0 && self.timeout_scale <= 20.0) {
            miette::bail!(
                "--timeout-scale must be in (0, 20], not {}",
                self.timeout_scale
            );
        }
        let accel = match self.accel.as_str() {
            "auto" => None,
            a => Some(
                a.parse::<Accel>()
                    .map_err(|e| miette::miette!("--accel: {e}"))?,
            ),
        };
        Ok(run::RunOptions {
            accel,
            timeout_scale: self.timeout_scale,
            runs_dir: self.runs_dir.unwrap_or_else(paths::runs_dir),
            keep: false,
            console: None,
            bare_until: None,
        })
    }
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build (or reuse from the cache) a recipe's image.
    Build {
        recipe: String,
        /// Recipe parameters, NAME=VALUE.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A folder copied into the guest root before the initramfs is built (modes kept).
        #[arg(long, value_name = "DIR")]
        overlay: Option<PathBuf>,
        /// A script run as root in the guest root (chroot) before the initramfs is built.
        #[arg(long, value_name = "FILE")]
        customize: Option<PathBuf>,
        /// A dracut source tree built and installed instead of the distribution's dracut
        /// (recipes of the dracut flavour).
        #[arg(long, value_name = "DIR")]
        dracut_source: Option<PathBuf>,
    },
    /// Build (or reuse) every image the given scenarios name, before running them.
    Prepare {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// List recipes and cached images.
    List,
    /// Remove cached images no current recipe default or shipped scenario would build.
    Prune {
        /// Remove every cached image, wanted or not.
        #[arg(long)]
        all: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help, version and usage errors only print.
            end_quietly_on_a_closed_pipe();
            e.exit()
        }
    };
    if only_prints(&cli.command) {
        end_quietly_on_a_closed_pipe();
    }
    netboot_harness::support::logging::init(cli.verbose);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cmd: Cmd) -> miette::Result<ExitCode> {
    match cmd {
        Cmd::Run {
            scenarios,
            boot,
            keep,
            console,
        } => {
            let mut opts = boot.options()?;
            check_hold_flags(scenarios.len(), keep, console.is_some())?;
            opts.keep = keep;
            opts.console = console;
            // Validate every scenario before running any: a typo in the third file should not
            // cost the first two boots.
            for s in &scenarios {
                scenario::load(s)?;
            }
            let mut all_ok = true;
            let mut panicked = false;
            for s in &scenarios {
                let r = run::run_scenario(s, &opts)?;
                all_ok &= r.ok();
                panicked |= r
                    .summary
                    .as_ref()
                    .is_some_and(|s| s.verdict == report::HARNESS_PANIC);
                // Ctrl-C or SIGTERM stops the whole command, not just the scenario it hit.
                if r.summary
                    .as_ref()
                    .is_some_and(|s| s.verdict == "interrupted")
                {
                    break;
                }
            }
            Ok(if panicked {
                ExitCode::from(run::EXIT_HARNESS_PANIC as u8)
            } else if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Bench {
            scenario,
            runs,
            compare_step,
            beside,
            boot,
        } => {
            use netboot_harness::cli::bench;
            if !(1..=100).contains(&runs) {
                miette::bail!("--runs must be 1..=100, not {runs}");
            }
            let opts = boot.options()?;
            // Both checked before either boots: a bad second file must not cost the first's runs.
            scenario::load(&scenario)?;
            if let Some(b) = &beside {
                scenario::load(b)?;
            }
            let mut reports = Vec::new();
            for path in std::iter::once(&scenario).chain(beside.as_ref()) {
                let (report, json) = bench::bench(path, runs, &opts, &compare_step)?;
                print(&bench::render(&report));
                print(&format!("  results: {}\n", json.display()));
                if let Some(svg) = &report.picture {
                    print(&format!("  picture: {}\n", svg.display()));
                }
                reports.push(report);
            }
            if let [a, b] = &reports[..] {
                print(&bench::render_beside(a, b));
            }
            Ok(if reports.iter().all(|r| r.passed == r.runs) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Check { scenarios } => {
            let mut failed = 0;
            for s in &scenarios {
                match scenario::load(s) {
                    Ok(sc) => println!(
                        "{}: ok ({}, {} steps)",
                        s.display(),
                        sc.name,
                        sc.steps.len()
                    ),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{:?}", miette::Report::new(e));
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::List {
            tier,
            paths: only_paths,
        } => {
            let dir = paths::scenarios_dir();
            let files = paths::scenario_files(&dir)
                .map_err(|e| miette::miette!("listing {}: {e}", dir.display()))?;
            let mut invalid = false;
            for f in files {
                match scenario::load(&f) {
                    Ok(s) if tier.is_some_and(|t| t != s.tier) => {}
                    Ok(_) if only_paths => println!("{}", f.display()),
                    Ok(s) => {
                        let first = s.description.lines().next().unwrap_or("").to_string();
                        let t = match s.tier {
                            scenario::Tier::Fast => "fast",
                            scenario::Tier::Full => "full",
                            scenario::Tier::Bench => "bench",
                        };
                        println!("{:<28} {t:<5} {}", s.name, first);
                    }
                    // A script asking for a tier's files must not lose an invalid one silently.
                    Err(e) => {
                        invalid = true;
                        eprintln!("{:<28} INVALID: {}", f.display(), e.summary());
                    }
                }
            }
            Ok(if invalid && only_paths {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Image { command } => image_cmd(command),
        Cmd::Doctor { runs_dir } => {
            let runs = runs_dir.unwrap_or_else(paths::runs_dir);
            let checks = netboot_harness::cli::doctor::run(&image::cache_dir(), &runs);
            print!("{}", netboot_harness::cli::doctor::render(&checks));
            Ok(if netboot_harness::cli::doctor::ok(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Report { run_dirs, svg } => {
            let mut runs = Vec::new();
            for dir in &run_dirs {
                let s = Summary::read(dir)
                    .map_err(|e| miette::miette!("{}/summary.json: {e}", dir.display()))?;
                let label = dir.file_name().unwrap_or(dir.as_os_str());
                runs.push((label.to_string_lossy().into_owned(), s));
            }
            // The picture first: a reader that goes away early ends the printing, not the work.
            if let Some(out) = &svg {
                std::fs::write(out, timeline::render_svg(&runs))
                    .map_err(|e| miette::miette!("{}: {e}", out.display()))?;
            }
            for (dir, (_, s)) in run_dirs.iter().zip(&runs) {
                print!("{}", report::render_text(s, dir));
            }
            if let Some(out) = svg {
                println!("timeline: {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lab {
            scenario,
            run_dir,
            disk,
            accel,
            timeout_scale,
            timeout_why,
            host_netns,
            keep,
            console,
            bare_until,
        } => {
            let accel = accel.parse::<Accel>().map_err(|e| miette::miette!("{e}"))?;
            let code = run::lab_main(run::LabArgs {
                scenario,
                run_dir,
                disk,
                accel,
                timeout_scale,
                timeout_why,
                host_netns,
                keep,
                console,
                bare_until,
            });
            Ok(ExitCode::from(code as u8))
        }
    }
}

/// Verbs that read, print and exit: nothing of theirs is left half-done if they end at any print.
/// `report --svg` draws its picture before it prints.
fn only_prints(cmd: &Cmd) -> bool {
    match cmd {
        Cmd::Check { .. } | Cmd::List { .. } | Cmd::Doctor { .. } | Cmd::Report { .. } => true,
        Cmd::Image { command } => matches!(command, ImageCmd::List | ImageCmd::Prune { .. }),
        Cmd::Run { .. } | Cmd::Bench { .. } | Cmd::Lab { .. } => false,
    }
}

/// `doctor | head -1`: once the reader is gone, end as Unix tools do, killed by SIGPIPE, quietly.
/// Rust ignores SIGPIPE so that a write to a closed pipe is an error, and `println!` panics on
/// that error; restoring the default disposition ends the process at that write instead.
///
/// Only for verbs that just print ([`only_prints`]). The others own child processes, sockets
/// and a cleanup: there a write to a dead QEMU's monitor socket must stay an error the run
/// handles, never a death that skips the cleanup, and their own output goes through
/// `netboot_harness::support::stdout::print`, which drops what nobody reads and goes on.
fn end_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler, and this runs before any other thread starts.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("netboot-harness: cannot restore SIGPIPE's default: {e}");
    }
}

/// `--keep` and `--console` hold one run open for a person: refused where they cannot work,
/// before anything starts.
fn check_hold_flags(scenarios: usize, keep: bool, console: bool) -> miette::Result<()> {
    use std::io::IsTerminal;
    if (keep || console) && scenarios != 1 {
        let flag = if keep { "--keep" } else { "--console" };
        miette::bail!(
            "{flag} holds a single run open; give one scenario, not {scenarios} \
             (run the others separately)"
        );
    }
    if console && !std::io::stdin().is_terminal() {
        miette::bail!(
            "--console needs a terminal on stdin to type to the guest; \
             use --keep and `tail -f` the run's console-<node>.log instead"
        );
    }
    Ok(())
}

fn image_cmd(cmd: ImageCmd) -> miette::Result<ExitCode> {
    let images = paths::images_dir();
    match cmd {
        ImageCmd::Prepare { scenarios } => {
            tools::check(tools::IMAGE_TOOLS, Vec::new())?;
            let cache = image::cache_dir();
            std::fs::create_dir_all(&cache)
                .map_err(|e| miette::miette!("{}: {e}", cache.display()))?;
            // Validate every scenario before building anything.
            let loaded = scenarios
                .iter()
                .map(|f| scenario::load(f))
                .collect::<Result<Vec<_>, _>>()?;
            for s in loaded {
                // A fleet may boot several images: each node's own, besides the scenario's.
                for wanted in s.images() {
                    let path = match wanted {
                        scenario::ImageRef::File(p) => p.clone(),
                        scenario::ImageRef::Recipe { name, set, add } => {
                            let built = image::ensure_recipe(&images, name, set, add, &cache)?;
                            eprintln!(
                                "image {name}: {} {} (key {})",
                                if built.reused { "reused" } else { "built" },
                                built.path.display(),
                                &built.key[..16]
                            );
                            built.path
                        }
                    };
                    print(&format!(
                        "{}: {}
",
                        s.name,
                        path.display()
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Build {
            recipe,
            set,
            overlay,
            customize,
            dracut_source,
        } => {
            // Wrong paths are said before anything is checked or built.
            let add = cli_additions(&images, &recipe, overlay, customize, dracut_source)?;
            tools::check(tools::IMAGE_TOOLS, Vec::new())?;
            let mut overrides = std::collections::BTreeMap::new();
            for kv in set {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| miette::miette!("--set takes NAME=VALUE, not `{kv}`"))?;
                overrides.insert(k.to_string(), v.to_string());
            }
            let built =
                image::ensure_recipe(&images, &recipe, &overrides, &add, &image::cache_dir())?;
            print(&format!(
                "{} {} ({})\n",
                if built.reused { "reused" } else { "built" },
                built.path.display(),
                built.key
            ));
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Prune { all, dry_run } => prune_cmd(&images, all, dry_run),
        ImageCmd::List => {
            for r in image::list_recipes(&images)? {
                println!("{:<28} {}", r.name, r.description);
                for (k, p) in &r.params {
                    println!("    {k:<14} default {:?}: {}", p.default, p.help);
                    if !p.values.is_empty() {
                        println!("    {:<14} one of: {}", "", p.values.join(", "));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `image build`'s `--overlay`, `--customize` and `--dracut-source`: checked as a scenario's
/// are, except that paths are the user's own (relative to the current folder, anywhere).
fn cli_additions(
    images: &std::path::Path,
    recipe: &str,
    overlay: Option<PathBuf>,
    customize: Option<PathBuf>,
    dracut_source: Option<PathBuf>,
) -> miette::Result<scenario::Additions> {
    use scenario::additions;
    let fail = |(m, h): (String, Option<String>)| match h {
        Some(h) => miette::miette!(help = h, "{m}"),
        None => miette::miette!("{m}"),
    };
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let mut add = scenario::Additions::default();
    if let Some(o) = overlay {
        additions::check_overlay(&o).map_err(fail)?;
        add.overlay = Some(abs(o));
    }
    if let Some(c) = customize {
        additions::check_customize(&c).map_err(fail)?;
        add.customize = Some(abs(c));
    }
    if let Some(d) = dracut_source {
        let flavour = image::load_recipe(images, recipe)?.flavour;
        additions::check_dracut_source(&d, &flavour).map_err(fail)?;
        add.dracut_source = Some(abs(d));
    }
    Ok(add)
}

fn prune_cmd(images: &std::path::Path, all: bool, dry_run: bool) -> miette::Result<ExitCode> {
    use netboot_harness::image::prune::{self, Action};
    let cache = image::cache_dir();
    // With --all nothing is kept, so an invalid scenario must not stand in the way.
    let wanted = if all {
        prune::Wanted::new()
    } else {
        prune::wanted(images, &paths::scenarios_dir())?
    };
    let out = prune::prune(
        &cache,
        &wanted,
        &paths::project_root(),
        prune::PruneOptions { all, dry_run },
    )?;
    for e in &out.entries {
        let size = prune::human_bytes(e.bytes);
        let path = e.path.display();
        match e.action {
            Action::Removed => println!("removed       {path}  {size}"),
            Action::WouldRemove => println!("would remove  {path}  {size}"),
            Action::Kept => println!("kept          {path}  ({})", e.note),
            Action::InUse => println!("in use        {path}  ({})", e.note),
            Action::Refused => println!("REFUSED       {path}  ({})", e.note),
        }
    }
    let kept: Vec<_> = out
        .entries
        .iter()
        .filter(|e| e.action == Action::Kept && e.path.join("disk.img").exists())
        .collect();
    if !kept.is_empty() {
        println!(
            "kept {} image(s), {}: wanted by this checkout's recipes and scenarios, or not \
             known to be unwanted by the other checkouts that used them (--all removes them too)",
            kept.len(),
            prune::human_bytes(kept.iter().map(|e| e.bytes).sum())
        );
    }
    let freed = out.freed();
    println!(
        "{} {} ({freed} bytes) in {}",
        if dry_run { "would free" } else { "freed" },
        prune::human_bytes(freed),
        cache.display()
    );
    Ok(if out.refused() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
