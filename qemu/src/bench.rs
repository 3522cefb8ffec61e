//! The benchmark behind BENCHMARKS.md: rkdump against makedumpfile on the same vmcores, in
//! the same run.
//!
//! Every command reads the same raw vmcore (from a lab crash, in the page cache after a first
//! read) and writes to tmpfs, where writing and fsync cost little, so the times measure
//! reading, filtering, compressing and writing. Each command runs `repeats` times; the table
//! shows the median wall time, the output size and the peak RSS (GNU time's `%M`). Absolute
//! times on shared machines are noise; the ratios between rows of one run are the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One measured command.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran.
    pub label: String,
    /// Median wall time in seconds.
    pub seconds: f64,
    /// Output size in bytes (0 when there is no output file).
    pub bytes: u64,
    /// Peak resident set size in KiB.
    pub peak_rss_kib: u64,
    /// Why the command failed, if it did.
    pub failed: Option<String>,
}

/// A tool invocation: label and arguments before `VMCORE OUTPUT`.
struct Case {
    label: String,
    program: PathBuf,
    args: Vec<String>,
}

fn case(label: &str, program: &Path, args: Vec<String>) -> Case {
    Case {
        label: label.to_owned(),
        program: program.to_owned(),
        args,
    }
}

fn strings(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// Runs `program args vmcore output` under GNU time and returns (seconds, peak RSS KiB).
fn measure(
    program: &Path,
    args: &[String],
    vmcore: &Path,
    output: Option<&Path>,
) -> Result<(f64, u64)> {
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut command = Command::new("/usr/bin/time");
    command
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(program)
        .args(args)
        .arg(vmcore);
    if let Some(output) = output {
        command.arg(output);
    }
    command.stdout(std::process::Stdio::null());
    let started = Instant::now();
    let result = command
        .output()
        .context("running /usr/bin/time (package `time`)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !result.status.success() {
        bail!(
            "{} {args:?} failed: {}",
            program.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    let rss = std::fs::read_to_string(rss_file.path())?
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .parse()?;
    Ok((seconds, rss))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Measures every case on `vmcore`, writing outputs into `scratch` (a tmpfs directory).
pub fn run(vmcore: &Path, scratch: &Path, rkdump: &Path, repeats: usize) -> Result<Vec<Row>> {
    let upstream = crate::reference::makedumpfile();
    let debian = PathBuf::from("/usr/bin/makedumpfile");
    let taskset = Path::new("/usr/bin/taskset");
    let rkdump_path = rkdump.display().to_string();
    let upstream_path = upstream.display().to_string();
    let mut rows = Vec::new();
    // Warm the page cache, then measure reading the whole vmcore: the floor for -d 0.
    measure(Path::new("/bin/cat"), &[], vmcore, None)?;
    let read: Vec<f64> = (0..repeats)
        .map(|_| measure(Path::new("/bin/cat"), &[], vmcore, None).map(|m| m.0))
        .collect::<Result<_>>()?;
    rows.push(Row {
        label: "read the vmcore (cat > /dev/null)".into(),
        seconds: median(read),
        bytes: 0,
        peak_rss_kib: 0,
        failed: None,
    });
    for level in ["31", "1"] {
        let d = |tail: &[&str]| strings(&[&["-d", level], tail]);
        let rk =
            |tail: &[&str]| strings(&[&["save", "-f", "--message-level", "0", "-d", level], tail]);
        let cases = [
            case(
                &format!("makedumpfile 1.7.2 -l -d {level}"),
                &debian,
                d(&["-l"]),
            ),
            case(
                &format!("makedumpfile 1.7.2 -c -d {level}"),
                &debian,
                d(&["-c"]),
            ),
            case(
                &format!("makedumpfile 1.7.2 -l -d {level} --num-threads 2"),
                &debian,
                d(&["-l", "--num-threads", "2"]),
            ),
            case(
                &format!("makedumpfile upstream -l -d {level}"),
                &upstream,
                d(&["-l"]),
            ),
            case(
                &format!("makedumpfile upstream -c -d {level}"),
                &upstream,
                d(&["-c"]),
            ),
            case(
                &format!("makedumpfile upstream -z -d {level}"),
                &upstream,
                d(&["-z"]),
            ),
            case(
                &format!("makedumpfile upstream -z -d {level} --num-threads 2"),
                &upstream,
                d(&["-z", "--num-threads", "2"]),
            ),
            case(
                &format!("**rkdump -d {level}** (zstd, 2 threads)"),
                rkdump,
                rk(&[]),
            ),
            case(
                &format!("rkdump -d {level} --num-threads 1"),
                rkdump,
                rk(&["--num-threads", "1"]),
            ),
            case(
                &format!("rkdump -d {level} --compress none"),
                rkdump,
                rk(&["--compress", "none"]),
            ),
            // One CPU (a capture kernel with nr_cpus=1): rkdump's default against a serial loop.
            case(
                &format!("one CPU: rkdump -d {level}"),
                taskset,
                [strings(&[&["-c", "0"]]), vec![rkdump_path.clone()], rk(&[])].concat(),
            ),
            case(
                &format!("one CPU: makedumpfile upstream -z -d {level}"),
                taskset,
                [
                    strings(&[&["-c", "0"]]),
                    vec![upstream_path.clone()],
                    d(&["-z"]),
                ]
                .concat(),
            ),
        ];
        measure_cases(cases, vmcore, scratch, repeats, &mut rows)?;
    }
    Ok(rows)
}

/// Runs each case `repeats` times on `vmcore`, writing into `scratch`, and appends its row.
fn measure_cases(
    cases: impl IntoIterator<Item = Case>,
    vmcore: &Path,
    scratch: &Path,
    repeats: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    for case in cases {
        let output = scratch.join("bench.out");
        let mut times = Vec::new();
        let mut rss = 0;
        let mut bytes = 0;
        let mut failed = None;
        for _ in 0..repeats {
            let _ = std::fs::remove_file(&output);
            match measure(&case.program, &case.args, vmcore, Some(&output)) {
                Ok((seconds, peak)) => {
                    times.push(seconds);
                    rss = rss.max(peak);
                    bytes = std::fs::metadata(&output)?.len();
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&output);
        let seconds = if times.is_empty() {
            f64::NAN
        } else {
            median(times)
        };
        rows.push(Row {
            label: case.label,
            seconds,
            bytes,
            peak_rss_kib: rss,
            failed,
        });
    }
    Ok(())
}

/// makedumpfile's codecs (`-c` zlib, `-l` LZO, `-p` snappy) on `vmcore`: upstream makedumpfile
/// serial and with 2 threads, rkdump with 1 and 2 threads, at `-d 31` and `-d 1`.
pub fn codecs(vmcore: &Path, scratch: &Path, rkdump: &Path, repeats: usize) -> Result<Vec<Row>> {
    let upstream = crate::reference::makedumpfile();
    let mut rows = Vec::new();
    measure(Path::new("/bin/cat"), &[], vmcore, None)?;
    for level in ["31", "1"] {
        for codec in ["-c", "-l", "-p"] {
            let d = |tail: &[&str]| strings(&[&[codec, "-d", level], tail]);
            let rk = |tail: &[&str]| {
                strings(&[
                    &["save", "-f", "--message-level", "0", codec, "-d", level],
                    tail,
                ])
            };
            let cases = [
                case(
                    &format!("makedumpfile upstream {codec} -d {level}"),
                    &upstream,
                    d(&[]),
                ),
                case(
                    &format!("makedumpfile upstream {codec} -d {level} --num-threads 2"),
                    &upstream,
                    d(&["--num-threads", "2"]),
                ),
                case(
                    &format!("rkdump {codec} -d {level} --num-threads 1"),
                    rkdump,
                    rk(&["--num-threads", "1"]),
                ),
                case(
                    &format!("rkdump {codec} -d {level} --num-threads 2"),
                    rkdump,
                    rk(&["--num-threads", "2"]),
                ),
            ];
            measure_cases(cases, vmcore, scratch, repeats, &mut rows)?;
        }
    }
    Ok(rows)
}

/// The codec goals: rkdump with 2 threads against makedumpfile's faster run (serial or 2
/// threads) of the same codec, time and size, and 2 threads against 1.
pub fn codec_ratios(rows: &[Row]) -> String {
    let find = |label: &str| rows.iter().find(|r| r.label == label && r.failed.is_none());
    let mut out = String::from(
        "| Level | Codec | rkdump 2 threads / makedumpfile: time | size | rkdump 2 threads vs 1 |\n|---|---|---:|---:|---:|\n",
    );
    for level in ["31", "1"] {
        for codec in ["-c", "-l", "-p"] {
            let theirs = [
                find(&format!("makedumpfile upstream {codec} -d {level}")),
                find(&format!(
                    "makedumpfile upstream {codec} -d {level} --num-threads 2"
                )),
            ];
            let best = theirs
                .into_iter()
                .flatten()
                .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let one = find(&format!("rkdump {codec} -d {level} --num-threads 1"));
            let two = find(&format!("rkdump {codec} -d {level} --num-threads 2"));
            if let (Some(best), Some(one), Some(two)) = (best, one, two) {
                let _ = writeln!(
                    out,
                    "| `-d {level}` | `{codec}` | {:.2} | {:.4} | {:.2}x |",
                    two.seconds / best.seconds,
                    two.bytes as f64 / best.bytes as f64,
                    one.seconds / two.seconds,
                );
            }
        }
    }
    out
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Command | Time (s) | Output (bytes) | Peak RSS (MiB) |\n|---|---:|---:|---:|\n",
    );
    for row in rows {
        let bytes = if row.bytes == 0 {
            "-".to_owned()
        } else {
            row.bytes.to_string()
        };
        let rss = if row.peak_rss_kib == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", row.peak_rss_kib as f64 / 1024.0)
        };
        let _ = writeln!(
            out,
            "| {} | {:.3} | {bytes} | {rss} |",
            row.label, row.seconds
        );
    }
    out
}

/// The ratios the goals are stated in.
pub fn ratios(rows: &[Row]) -> String {
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.label.starts_with(prefix) && r.failed.is_none())
    };
    let mut out = String::new();
    let read = find("read the vmcore").map_or(f64::NAN, |r| r.seconds);
    for level in ["31", "1"] {
        let ours = find(&format!("**rkdump -d {level}**"));
        let single = find(&format!("rkdump -d {level} --num-threads 1"));
        let zlib = find(&format!("makedumpfile 1.7.2 -c -d {level}"));
        let lzo = find(&format!("makedumpfile 1.7.2 -l -d {level}"));
        let lzo_up = find(&format!("makedumpfile upstream -l -d {level}"));
        let one_cpu = find(&format!("one CPU: rkdump -d {level}"));
        let serial = find(&format!("one CPU: makedumpfile upstream -z -d {level}"));
        if let (
            Some(ours),
            Some(single),
            Some(zlib),
            Some(lzo),
            Some(lzo_up),
            Some(one_cpu),
            Some(serial),
        ) = (ours, single, zlib, lzo, lzo_up, one_cpu, serial)
        {
            let _ = writeln!(
                out,
                "- `-d {level}`: {:.2}x faster than `makedumpfile -c` (output {:.3} of its size); \
                 {:.2}x the speed of `makedumpfile -l` (1.7.2), {:.2}x upstream's; \
                 2 threads {:.2}x faster than 1; on one CPU {:.2}x the speed of makedumpfile's \
                 serial -z loop; {:.2}x the time of reading the whole vmcore.",
                zlib.seconds / ours.seconds,
                ours.bytes as f64 / zlib.bytes as f64,
                lzo.seconds / ours.seconds,
                lzo_up.seconds / ours.seconds,
                single.seconds / ours.seconds,
                serial.seconds / one_cpu.seconds,
                ours.seconds / read,
            );
        }
    }
    out
}

/// The network benchmark: the same vmcore sent to a real sshd on 127.0.0.1, kdump-utils' way
/// (`makedumpfile -F | ssh ... dd`) against rkdump's SFTP target and its `dd` stream. The
/// transfer is loopback, so the times measure filtering, compression, encryption and the
/// protocols, not a network. `rkdump capture` also writes vmcore-dmesg.txt, the log and the
/// manifest, as it does in the capture kernel.
pub fn network(vmcore: &Path, scratch: &Path, rkdump: &Path, repeats: usize) -> Result<Vec<Row>> {
    use crate::sshd::SshServer;
    let mut server = SshServer::start(&scratch.join("sshd"), rkdump, &["sftp"], "--reserve 0")?;
    let shell = server.add_shell_client("stock")?;
    let port = server.port;
    let known_hosts = scratch.join("known_hosts");
    std::fs::write(&known_hosts, server.known_hosts_line("127.0.0.1", port))?;
    let ssh_config = scratch.join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host 127.0.0.1\n  Port {port}\n  UserKnownHostsFile {}\n",
            known_hosts.display()
        ),
    )?;
    for hooks in ["pre.d", "post.d"] {
        std::fs::create_dir_all(scratch.join(hooks))?;
    }
    let received = scratch.join("received");
    let collector = "makedumpfile -l --message-level 7 -d 31";
    let rkdump_capture = |client: usize, collector: &str, path: &Path| -> Result<String> {
        let conf = scratch.join(format!("kdump-{client}.conf"));
        std::fs::write(
            &conf,
            format!(
                "ssh root@127.0.0.1\nsshkey {}\npath {}\ncore_collector {collector}\n",
                server.clients[client].key.display(),
                path.display()
            ),
        )?;
        Ok(format!(
            "{} capture --config {} --vmcore \"$1\" --ssh-config {} --log {} --pre-dir {} \
             --post-dir {} --network-timeout 30",
            rkdump.display(),
            conf.display(),
            ssh_config.display(),
            scratch.join("capture.log").display(),
            scratch.join("pre.d").display(),
            scratch.join("post.d").display()
        ))
    };
    let cases = [
        (
            "kdump-utils: makedumpfile upstream -F -l -d 31 piped to ssh dd".to_owned(),
            format!(
                "{} -F -l --message-level 7 -d 31 \"$1\" | ssh -q -i {} -p {port} -o BatchMode=yes \
                 -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} root@127.0.0.1 \
                 \"umask 0077 && dd bs=512 of={}/vmcore.flat 2>/dev/null\"",
                crate::reference::makedumpfile().display(),
                server.clients[shell].key.display(),
                known_hosts.display(),
                received.display()
            ),
        ),
        (
            "**rkdump ssh target** (SFTP, zstd, 2 threads)".to_owned(),
            rkdump_capture(0, collector, Path::new("/bench"))?,
        ),
        (
            "rkdump ssh target, -F: dd stream as kdump-utils".to_owned(),
            rkdump_capture(shell, &format!("{collector} -F"), &received)?,
        ),
    ];
    let mut rows = Vec::new();
    for (label, script) in cases {
        let mut times = Vec::new();
        let mut rss = 0;
        let mut bytes = 0;
        let mut failed = None;
        for _ in 0..repeats {
            let _ = std::fs::remove_dir_all(&received);
            let _ = std::fs::remove_dir_all(&server.root);
            std::fs::create_dir_all(&received)?;
            std::fs::create_dir_all(&server.root)?;
            // pipefail: a failing makedumpfile must not pass for a fast run.
            let args = vec![
                "-c".to_owned(),
                format!("set -o pipefail; {script}"),
                "bash".to_owned(),
            ];
            match measure(Path::new("/bin/bash"), &args, vmcore, None) {
                Ok((seconds, peak)) => {
                    times.push(seconds);
                    rss = rss.max(peak);
                    bytes = largest_file(&received)?.max(largest_file(&server.root)?);
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        rows.push(Row {
            label,
            seconds: if times.is_empty() {
                f64::NAN
            } else {
                median(times)
            },
            bytes,
            peak_rss_kib: rss,
            failed,
        });
    }
    Ok(rows)
}

/// The size of the largest file under `dir` (the dump, next to its small companions).
fn largest_file(dir: &Path) -> Result<u64> {
    let mut largest = 0;
    for entry in walk(dir)? {
        largest = largest.max(std::fs::metadata(entry)?.len());
    }
    Ok(largest)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// One tool's timings in the NFS benchmark.
#[derive(Debug, Clone)]
pub struct NfsRow {
    /// The command, as the capture kernel ran it.
    pub label: String,
    /// Median wall time in seconds, the final `sync` included.
    pub seconds: f64,
    /// Size of the dump it wrote.
    pub bytes: u64,
}

/// The NFS benchmark. Unlike the others it runs inside a capture kernel, because this host's
/// kernel has no NFS client: a guest of `variant` crashes, its capture kernel (rkdump as PID 1)
/// mounts nfs-ganesha's export through the guest's network, and a `kdump_pre` hook then writes
/// the same `/proc/vmcore` to that mount with upstream makedumpfile (kdump-utils' NFS default,
/// `-l -d 31`) and with `rkdump save -d 31` (every online CPU, then one thread), `repeats`
/// times each in rotating order, each run timed from its start to the end of a `sync`. The
/// guest runs under TCG, so absolute times are emulation-bound; the ratios are the result.
/// Returns the rows and the CPUs the capture kernel had online.
pub fn nfs(
    variant: &crate::variants::Variant,
    dir: &Path,
    repeats: usize,
) -> Result<(Vec<NfsRow>, String)> {
    use crate::scenario::{self, Forward, Network, SERVER_ADDRESS, Scenario};
    let tools = [
        (
            "makedumpfile upstream -l -d 31 (single thread)",
            "/bin/makedumpfile -l --message-level 0 -d 31",
            "makedumpfile",
        ),
        (
            "**rkdump save -d 31** (zstd, every online CPU)",
            "/init save --message-level 0 -d 31",
            "rkdump",
        ),
        (
            "rkdump save -d 31 --num-threads 1",
            "/init save --message-level 0 -d 31 --num-threads 1",
            "rkdump-1",
        ),
    ];
    let mut hook = String::from(
        "# kdump_pre of the NFS benchmark: rkdump has mounted the export on /kdumproot.\n\
         out=/kdumproot/bench\nmkdir -p $out\n\
         now() { read up idle < /proc/uptime; echo $up; }\n\
         cat /sys/devices/system/cpu/online > $out/cpus\n",
    );
    for run in 0..repeats {
        // Rotated each run, so that no tool always goes first.
        let mut order: Vec<_> = tools.iter().collect();
        order.rotate_left(run % tools.len());
        for (_, command, name) in order {
            // The first run's dump is kept for its size; later ones go at once.
            let cleanup = if run == 0 {
                String::new()
            } else {
                format!("rm -f $out/{name}.{run}\n")
            };
            hook.push_str(&format!(
                "t0=$(now); {command} /proc/vmcore $out/{name}.{run} >/dev/null 2>&1; s=$?; sync; \
                 t1=$(now); echo \"{name} {run} $s $t0 $t1\" >> $out/results\n{cleanup}"
            ));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let server = crate::nfsd::NfsServer::start(&dir.join("nfs"))?;
    let mut scenario = Scenario::new(
        *variant,
        &format!(
            "nfs {SERVER_ADDRESS}:/export\npath /var/crash\n\
             core_collector makedumpfile -l --message-level 7 -d 31\nkdump_pre /bin/nfs-bench\n"
        ),
    )
    .script("/bin/nfs-bench", &hook)
    .program("/bin/makedumpfile", &crate::reference::makedumpfile());
    scenario.capture_cmdline = "rkdump.hook_timeout=7200".to_owned();
    scenario.network = Some(Network {
        mac: "52:54:00:12:34:56".to_owned(),
        forwards: vec![Forward {
            guest_port: 2049,
            host_port: server.port,
        }],
    });
    let kernel = crate::kernels::Kernel::fetch(variant.flavor)?;
    let prepared = scenario.prepare(&kernel, &dir.join("guest"))?;
    let mut vm = prepared.start()?;
    scenario::wait_for_crash(&mut vm, &mut |_| {})?;
    vm.wait_exit(std::time::Duration::from_secs(3 * 3600))?;
    let bench = server.export.join("bench");
    let results = std::fs::read_to_string(bench.join("results")).with_context(|| {
        format!(
            "no results from the guest; its console is {}",
            prepared.serial_log().display()
        )
    })?;
    let mut rows = Vec::new();
    for (label, _, name) in tools {
        let mut times = Vec::new();
        for line in results.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [tool, run, status, start, end] = fields[..] else {
                bail!("unexpected result line {line:?}");
            };
            if tool != name {
                continue;
            }
            if status != "0" {
                bail!("{name} run {run} exited with {status} in the guest");
            }
            times.push(end.parse::<f64>()? - start.parse::<f64>()?);
        }
        if times.len() != repeats {
            bail!(
                "{} of {repeats} {name} runs finished: {results:?}",
                times.len()
            );
        }
        rows.push(NfsRow {
            label: label.to_owned(),
            seconds: median(times),
            bytes: std::fs::metadata(bench.join(format!("{name}.0")))?.len(),
        });
    }
    let cpus = std::fs::read_to_string(bench.join("cpus"))?
        .trim()
        .to_owned();
    Ok((rows, cpus))
}

/// The NFS rows as a markdown table, each against the first row.
pub fn nfs_table(rows: &[NfsRow]) -> String {
    let mut out = String::from(
        "| command | time | dump size | time ratio | size ratio |\n|---|---:|---:|---:|---:|\n",
    );
    let Some(reference) = rows.first() else {
        return out;
    };
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {:.1} MB | {:.2} | {:.2} |",
            row.label,
            row.seconds,
            row.bytes as f64 / 1e6,
            row.seconds / reference.seconds,
            row.bytes as f64 / reference.bytes as f64
        );
    }
    out
}
