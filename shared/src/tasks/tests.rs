use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic_health::pb::health_check_response::ServingStatus;

use super::*;
use crate::health::LIVENESS;

fn serving_health() -> Health {
    let health = Health::new(["test.v1.Service"]);
    health.serving();
    health
}

#[tokio::test]
async fn a_task_that_panics_while_serving_fails_every_health_name() {
    let health = serving_health();
    let mut tasks = Tasks::default();
    tasks.add("doomed", async { panic!("the relay lost its mind") });
    tasks
        .supervise("test", Signals::default(), health.clone())
        .await;
    for name in ["", LIVENESS, "readiness", "test.v1.Service"] {
        assert_eq!(
            health.status(name),
            Some(ServingStatus::NotServing),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_task_that_returns_while_serving_died_too() {
    let health = serving_health();
    let mut tasks = Tasks::default();
    tasks.add("quitter", async {});
    tasks
        .supervise("test", Signals::default(), health.clone())
        .await;
    assert_eq!(health.status(LIVENESS), Some(ServingStatus::NotServing));
}

#[tokio::test]
async fn tasks_that_stop_on_the_drain_leave_health_alone() {
    let health = serving_health();
    let signals = Signals::default();
    let mut tasks = Tasks::default();
    let draining = signals.draining().clone();
    tasks.add("relay", async move { draining.cancelled().await });
    let drained = signals.drained().clone();
    tasks.add("last pass", async move { drained.cancelled().await });
    let supervised = tokio::spawn(tasks.supervise("test", signals.clone(), health.clone()));
    signals.draining().cancel();
    signals.drained().cancel();
    supervised.await.unwrap();
    assert_eq!(health.status(LIVENESS), Some(ServingStatus::Serving));
}

fn config() -> crate::ServerConfig {
    let env = crate::testing::env([
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_DELAY", "1ms"),
        ("SHUTDOWN_GRACE_PERIOD", "20s"),
    ]);
    crate::ServerConfig::from_env(&env, 0, 0).unwrap()
}

async fn liveness(server: &crate::testing::TestServer) -> i32 {
    let request = tonic_health::pb::HealthCheckRequest {
        service: LIVENESS.into(),
    };
    server
        .health()
        .check(request)
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn a_server_whose_task_dies_reports_not_serving_to_its_liveness_probe() {
    let (died_tx, died_rx) = tokio::sync::oneshot::channel::<()>();
    let server = crate::Server::builder("test", &config())
        .spawn("relay", async move {
            let _ = died_rx.await;
            panic!("the relay lost its mind");
        })
        .bind()
        .await
        .unwrap();
    let health = server.health().clone();
    let server = crate::testing::TestServer::start(server);
    assert_eq!(liveness(&server).await, ServingStatus::Serving as i32);
    drop(died_tx);
    crate::testing::eventually("liveness NOT_SERVING", || async {
        health.status(LIVENESS) == Some(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(liveness(&server).await, ServingStatus::NotServing as i32);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_drain_waits_for_the_tasks_and_their_last_pass_comes_after_the_calls() {
    let passes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let builder = crate::Server::builder("test", &config());
    let signals = builder.signals();
    let recorded = passes.clone();
    let server = builder
        .spawn("relay", async move {
            signals.drained().cancelled().await;
            // A last pass that takes a while: the server's stop waits for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            recorded.lock().unwrap().push("last pass");
        })
        .bind()
        .await
        .unwrap();
    let server = crate::testing::TestServer::start(server);
    assert_eq!(liveness(&server).await, ServingStatus::Serving as i32);
    server.stop().await.unwrap();
    assert_eq!(*passes.lock().unwrap(), ["last pass"]);
}

#[tokio::test]
async fn every_repeats_at_once_after_more_and_stops_when_told() {
    let stop = CancellationToken::new();
    let passes = Arc::new(AtomicUsize::new(0));
    let counted = passes.clone();
    let stopper = stop.clone();
    every(Duration::from_secs(3600), &stop, move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let stopper = stopper.clone();
        async move {
            if n < 3 {
                return Pass::More;
            }
            stopper.cancel();
            Pass::Done
        }
    })
    .await;
    assert_eq!(passes.load(Ordering::SeqCst), 3);
}
