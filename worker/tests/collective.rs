//! The c10d shim between real processes: this test binary re-runs itself as
//! each rank (CARTO_TEST_RANK set), and the parent checks every rank's exit.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use carto_worker::collective::{all_reduce_rows, C10dGroup, Collective, GroupConfig};
use tch::{Device, Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(rank: usize, world: usize, port: u16, timeout: Duration) -> GroupConfig {
    GroupConfig {
        backend: "gloo",
        device: Device::Cpu,
        master_host: "127.0.0.1".into(),
        master_port: port,
        rank,
        world,
        prefix: "test/1".into(),
        bind_host: "127.0.0.1".into(),
        timeout,
    }
}

/// Runs `test` in `world` child processes, one per rank; returns their outputs.
fn spawn_ranks(test: &str, world: usize, extra: &[(&str, String)]) -> Vec<std::process::Output> {
    let port = free_port();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
                .env("CARTO_TEST_RANK", rank.to_string())
                .env("CARTO_TEST_WORLD", world.to_string())
                .env("CARTO_TEST_PORT", port.to_string());
            for (k, v) in extra {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn role() -> Option<(usize, usize, u16)> {
    let rank = std::env::var("CARTO_TEST_RANK").ok()?.parse().ok()?;
    let world = std::env::var("CARTO_TEST_WORLD").ok()?.parse().ok()?;
    let port = std::env::var("CARTO_TEST_PORT").ok()?.parse().ok()?;
    Some((rank, world, port))
}

#[test]
fn all_reduce_broadcast_all_gather_and_rows_across_three_processes() {
    let Some((rank, world, port)) = role() else {
        for (r, out) in spawn_ranks("all_reduce_broadcast_all_gather_and_rows_across_three_processes", 3, &[])
            .iter()
            .enumerate()
        {
            assert!(out.status.success(), "rank {r} failed: {out:?}");
        }
        return;
    };
    let g = C10dGroup::new(&config(rank, world, port, Duration::from_secs(30)), None).unwrap();
    assert_eq!((g.rank(), g.world_size()), (rank, world));

    // all-reduce: rank r contributes (r+1)·[1, 2, 3].
    let mut t = Tensor::from_slice(&[1f32, 2., 3.]) * (rank as f64 + 1.0);
    g.all_reduce_sum(&mut t).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![6., 12., 18.]);

    // broadcast from rank 1 into a 2-D tensor, in place.
    let mut b = Tensor::full([2, 2], rank as f64, (Kind::Float, Device::Cpu));
    g.broadcast(&mut b, 1).unwrap();
    assert!(b.equal(&Tensor::full([2, 2], 1.0, (Kind::Float, Device::Cpu))));

    // all-gather in rank order.
    let gathered = g.all_gather(&Tensor::from_slice(&[rank as i64 * 10, rank as i64 * 10 + 1])).unwrap();
    assert_eq!(Vec::<i64>::try_from(&gathered).unwrap(), vec![0, 1, 10, 11, 20, 21]);

    // Sparse rows: rank r touched rows {r, 5} with gradient r+1 each.
    let ids = Tensor::from_slice(&[rank as i64, 5]);
    let grad = Tensor::full([2, 2], rank as f64 + 1.0, (Kind::Float, Device::Cpu));
    let (uniq, summed) = all_reduce_rows(&g, &ids, &grad).unwrap();
    assert_eq!(Vec::<i64>::try_from(&uniq).unwrap(), vec![0, 1, 2, 5]);
    let want = Tensor::from_slice(&[1f32, 1., 2., 2., 3., 3., 6., 6.]).view([4, 2]);
    assert!(summed.equal(&want), "{summed:?}");

    g.barrier().unwrap();

    // An aborter is harmless on Gloo, and once the group is gone.
    let aborter = g.aborter();
    aborter.abort();
    g.barrier().unwrap();
    drop(g);
    aborter.abort();
}

#[test]
fn a_missing_rank_is_a_timeout_error_not_a_hang_or_abort() {
    let Some((rank, _world, port)) = role() else {
        // Only rank 0 of a world of 2 starts: joining must fail within the timeout.
        let started = Instant::now();
        let outs = spawn_ranks_only_rank0("a_missing_rank_is_a_timeout_error_not_a_hang_or_abort");
        assert!(outs.status.success(), "rank 0: {outs:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
        return;
    };
    assert_eq!(rank, 0);
    let started = Instant::now();
    let err = C10dGroup::new(&config(0, 2, port, Duration::from_secs(3)), None).err().expect("no peer: an error");
    let msg = err.to_string();
    assert!(msg.starts_with("collective: joining the process group"), "{msg}");
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the timeout: {:?}", started.elapsed());
    assert!(!msg.contains('\n'), "one line: {msg}");
}

fn spawn_ranks_only_rank0(test: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("CARTO_TEST_RANK", "0")
        .env("CARTO_TEST_WORLD", "2")
        .env("CARTO_TEST_PORT", free_port().to_string())
        .output()
        .unwrap()
}

#[test]
fn a_rank_that_dies_mid_job_fails_the_others_collective() {
    let Some((rank, world, port)) = role() else {
        let outs = spawn_ranks("a_rank_that_dies_mid_job_fails_the_others_collective", 2, &[]);
        assert!(outs[0].status.success(), "rank 0: {:?}", outs[0]);
        return;
    };
    let g = C10dGroup::new(&config(rank, world, port, Duration::from_secs(10)), None).unwrap();
    let mut t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    g.all_reduce_sum(&mut t).unwrap();
    if rank == 1 {
        // Dies without a word, like kill -9.
        std::process::exit(0);
    }
    let started = Instant::now();
    let err = g.all_reduce_sum(&mut t).expect_err("the peer is gone");
    assert!(err.to_string().starts_with("collective: all-reduce"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
