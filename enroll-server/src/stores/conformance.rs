//! The suite every store implementation must pass, run by each implementation's tests with a
//! function that opens the store (called again to check that changes survive reopening; each
//! store is dropped before the next is opened). It panics on the first failure.

use std::sync::Arc;

use pki::Serial;
use time::OffsetDateTime;

use super::{
    Account, AccountStore, Activation, EnrollToken, HardwareSeed, MailStore, NoticeStore, OtpState, OtpStore, OtpToken,
    OutboxMail, Role,
};

fn account(login_id: &str, role: Role) -> Account {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Account {
        login_id: login_id.to_owned(),
        role,
        master: if role == Role::Master { login_id.to_owned() } else { "conf-master".to_owned() },
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        failed_attempts: 0,
        locked: false,
        active: true,
        created_at: now,
        confirmation_hash: None,
        card_sealed: None,
        personal: false,
        otp_required: false,
        otp_step_secs: None,
        // A policy on the masters: the store keeps it as given.
        allowed_names: match role {
            Role::Master => ["*.conf.example", "10.0.0.0/8"].iter().filter_map(|n| n.parse().ok()).collect(),
            Role::General => Vec::new(),
        },
    }
}

/// Accounts: insert once, read back, list in login-ID order, atomic updates under 8 concurrent
/// writers, and everything still there after reopening.
pub fn accounts(open: &dyn Fn() -> Arc<dyn AccountStore>) {
    {
        let store = open();
        let master = account("conf-master", Role::Master);
        assert!(store.insert(&master).expect("insert"), "a new login ID is inserted");
        assert!(!store.insert(&account("conf-master", Role::General)).expect("insert"), "a taken ID is refused");
        assert_eq!(store.get("conf-master").expect("get"), Some(master.clone()), "the first insert stays");
        assert_eq!(store.get("conf-nobody").expect("get"), None);
        for id in ["conf-c", "conf-a", "conf-b"] {
            assert!(store.insert(&account(id, Role::General)).expect("insert"));
        }
        let ids: Vec<String> = store.list().expect("list").into_iter().map(|a| a.login_id).collect();
        assert_eq!(ids, ["conf-a", "conf-b", "conf-c", "conf-master"], "listed by login ID");

        let locked = store.update("conf-a", &mut |a| a.locked = true).expect("update").expect("exists");
        assert!(locked.locked, "update returns the account as stored");
        assert_eq!(store.update("conf-nobody", &mut |a| a.locked = true).expect("update"), None);
        let same = store.update("conf-a", &mut |_| {}).expect("update").expect("exists");
        assert_eq!(same, locked, "an update that changes nothing keeps the account");

        // Read-modify-write from 8 threads at once loses no increment.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        store.update("conf-b", &mut |a| a.failed_attempts += 1).expect("update");
                    }
                });
            }
        });
        assert_eq!(store.get("conf-b").expect("get").expect("exists").failed_attempts, 200);

        assert_eq!(store.unknown_logins().expect("count"), 0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..5 {
                        store.count_unknown_login().expect("count");
                    }
                });
            }
        });
        assert_eq!(store.count_unknown_login().expect("count"), 21, "no count is lost");

        // Enrollment tokens: taken once, by one of concurrent takers.
        let token = EnrollToken {
            login_id: "conf-a".into(),
            expires_at: OffsetDateTime::from_unix_timestamp(2_000_000_000).expect("time"),
            created_by: "operator".into(),
        };
        store.put_token(&[1; 32], &token).expect("put");
        store.put_token(&[2; 32], &token).expect("put");
        assert_eq!(store.take_token(&[3; 32]).expect("take"), None);
        let taken: Vec<Option<EnrollToken>> = std::thread::scope(|s| {
            let takers: Vec<_> = (0..8).map(|_| s.spawn(|| store.take_token(&[1; 32]).expect("take"))).collect();
            takers.into_iter().map(|t| t.join().expect("taker")).collect()
        });
        assert_eq!(taken.iter().flatten().collect::<Vec<_>>(), [&token], "exactly one taker gets it");
    }
    let store = open();
    assert!(store.get("conf-a").expect("get").expect("kept").locked, "changes survive reopening");
    assert_eq!(store.get("conf-b").expect("get").expect("kept").failed_attempts, 200);
    assert_eq!(store.list().expect("list").len(), 4);
    assert_eq!(store.unknown_logins().expect("count"), 21, "the count survives reopening");
    assert!(store.take_token(&[1; 32]).expect("take").is_none(), "a taken token stays taken");
    assert_eq!(store.take_token(&[2; 32]).expect("take").map(|t| t.login_id), Some("conf-a".into()), "kept");
}

/// Notices: nothing recorded, then the latest threshold recorded per certificate, after
/// reopening too.
pub fn notices(open: &dyn Fn() -> Arc<dyn NoticeStore>) {
    let one = Serial::from_random([1; 16]).unwrap_or_else(|| unreachable!("a valid serial"));
    let two = Serial::from_random([2; 16]).unwrap_or_else(|| unreachable!("a valid serial"));
    {
        let store = open();
        assert_eq!(store.last(&one).expect("last"), None);
        store.record(&one, 30).expect("record");
        store.record(&one, 7).expect("record");
        store.record(&two, 14).expect("record");
        assert_eq!(store.last(&one).expect("last"), Some(7));
    }
    let store = open();
    assert_eq!(store.last(&one).expect("last"), Some(7), "kept across reopening");
    assert_eq!(store.last(&two).expect("last"), Some(14));
}

/// OTP tokens: put and get, replace, list, atomic updates under 8 concurrent writers, the
/// once-only step check (of 8 concurrent acceptors of one step, exactly one wins), and
/// everything kept across reopening.
pub fn otp(open: &dyn Fn() -> Arc<dyn OtpStore>) {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let token = |login_id: &str| OtpToken {
        login_id: login_id.to_owned(),
        user_id: format!("u-{login_id}"),
        sealed_secret: vec![7; 48],
        step_secs: 30,
        digits: 6,
        mail: Some("ops@example.com".into()),
        state: OtpState::Pending,
        created_at: now,
        revoked_at: None,
        last_step: None,
        failures: 0,
        stopped: false,
        activation: Some(Activation { password_hash: "$argon2id$x".into(), tries: 0, expires_at: now }),
        serial: None,
        ask_at_login: true,
    };
    {
        let store = open();
        assert_eq!(store.get("conf-a").expect("get"), None);
        store.put(&token("conf-b")).expect("put");
        store.put(&token("conf-a")).expect("put");
        assert_eq!(store.get("conf-a").expect("get"), Some(token("conf-a")));
        let mut active = token("conf-a");
        active.state = OtpState::Active;
        active.activation = None;
        store.put(&active).expect("replace");
        assert_eq!(store.get("conf-a").expect("get"), Some(active.clone()), "put replaces");
        let ids: Vec<String> = store.list().expect("list").into_iter().map(|t| t.login_id).collect();
        assert_eq!(ids, ["conf-a", "conf-b"]);
        assert_eq!(store.update("conf-nobody", &mut |t| t.failures += 1).expect("update"), None);

        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        store.update("conf-b", &mut |t| t.failures += 1).expect("update");
                    }
                });
            }
        });
        assert_eq!(store.get("conf-b").expect("get").expect("kept").failures, 200, "no update is lost");

        // Eight acceptors of step 100 at once: the decision of the run that was stored counts.
        let wins: usize = std::thread::scope(|s| {
            let acceptors: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut accepted = false;
                        store
                            .update("conf-a", &mut |t| {
                                accepted = t.last_step.is_none_or(|last| 100 > last);
                                if accepted {
                                    t.last_step = Some(100);
                                }
                            })
                            .expect("update");
                        usize::from(accepted)
                    })
                })
                .collect();
            acceptors.into_iter().map(|a| a.join().expect("acceptor")).sum()
        });
        assert_eq!(wins, 1, "a step is accepted once");

        // Hardware seeds: stored all or none, assigned once.
        let seed = |serial: &str| HardwareSeed {
            serial: serial.to_owned(),
            sealed_secret: vec![1; 36],
            digits: 6,
            step_secs: 30,
            imported_at: now,
            assigned_to: None,
        };
        assert_eq!(store.put_seeds(&[seed("HW-1"), seed("HW-2")]).expect("put"), Ok(()));
        assert_eq!(store.put_seeds(&[seed("HW-3"), seed("HW-2")]).expect("put"), Err(vec!["HW-2".to_owned()]));
        assert_eq!(store.seed("HW-3").expect("seed"), None, "none of a refused batch");
        let assigned: usize = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|i| {
                    let store = &store;
                    s.spawn(move || usize::from(store.assign_seed("HW-1", &format!("conf-{i}")).expect("assign")))
                })
                .collect();
            racers.into_iter().map(|r| r.join().expect("racer")).sum()
        });
        assert_eq!(assigned, 1, "a seed goes to one login ID");
        assert!(!store.assign_seed("HW-9", "conf-a").expect("assign"), "no such seed");
    }
    let store = open();
    assert_eq!(store.get("conf-a").expect("get").expect("kept").last_step, Some(100), "kept across reopening");
    assert_eq!(store.get("conf-b").expect("get").expect("kept").failures, 200);
    let serials: Vec<String> = store.seeds().expect("seeds").into_iter().map(|s| s.serial).collect();
    assert_eq!(serials, ["HW-1", "HW-2"]);
    assert!(store.seed("HW-1").expect("seed").expect("kept").assigned_to.is_some());
}

/// The mail outbox: a key is queued once (sent or not), pending lists what waits, a sent mail
/// stays recorded (and out of pending) across reopening.
pub fn outbox(open: &dyn Fn() -> Arc<dyn MailStore>) {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mail = |to: &str| OutboxMail {
        to: to.to_owned(),
        subject: "件名 subject".into(),
        body: "本文 body".into(),
        queued_at: now,
        sent_at: None,
    };
    {
        let store = open();
        assert!(store.enqueue("conf:1", &mail("a@example.jp")).expect("enqueue"));
        assert!(!store.enqueue("conf:1", &mail("other@example.jp")).expect("enqueue"), "a key is queued once");
        assert!(store.enqueue("conf:2", &mail("b@example.jp")).expect("enqueue"));
        let keys: Vec<String> = store.pending().expect("pending").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["conf:1", "conf:2"]);
        store.mark_sent("conf:1", now).expect("sent");
        let pending = store.pending().expect("pending");
        assert_eq!(pending, [("conf:2".to_owned(), mail("b@example.jp"))]);
        let queued: usize = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| usize::from(store.enqueue("conf:3", &mail("c@example.jp")).expect("q"))))
                .collect();
            racers.into_iter().map(|r| r.join().expect("racer")).sum()
        });
        assert_eq!(queued, 1, "of concurrent enqueuers of one key, one queues it");
    }
    let store = open();
    assert!(!store.enqueue("conf:1", &mail("a@example.jp")).expect("enqueue"), "sent stays recorded");
    assert_eq!(store.pending().expect("pending").len(), 2, "conf:2 and conf:3 still wait");
}
