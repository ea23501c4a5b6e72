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

/// OAuth: clients and resources inserted once; a flow taken and a code first redeemed by one
/// of 8 concurrent callers; a code's second redemption told apart; a grant's tokens revoked
/// together; profiles made on first change; purge removes what lapsed and nothing else; all
/// of it still there after reopening.
pub fn oauth(open: &dyn Fn() -> Arc<dyn super::oauth::OAuthStore>) {
    use super::oauth::{
        CodeRecord, Flow, FlowStage, Grant, GrantResource, OAuthClient, Redeemed, Resource, TokenKind, TokenRecord,
    };
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let later = at + time::Duration::hours(1);
    let client = OAuthClient {
        client_id: "conf-client".into(),
        name: "家計簿".into(),
        company: "Conf K.K.".into(),
        redirect_uris: vec!["https://conf.example/cb".into()],
        scopes: vec!["certificates:read".into()],
        grant_days: 90,
        allow_password_login: false,
        tls_subject: "O=Conf, CN=conf-app".into(),
        created_at: at,
    };
    let flow = Flow {
        client_id: "conf-client".into(),
        redirect_uri: "https://conf.example/cb".into(),
        scopes: vec!["certificates:read".into()],
        state: Some("s".into()),
        code_challenge: "c".into(),
        stage: FlowStage::Pushed,
        csrf: "x".into(),
        login_id: None,
        risky: false,
        chosen_scopes: Vec::new(),
        chosen_resources: Vec::new(),
        pin_failures: 0,
        expires_at: later,
    };
    let grant = Grant {
        id: "conf-grant".into(),
        login_id: "conf-user".into(),
        contract: "conf-master".into(),
        client_id: "conf-client".into(),
        scopes: vec!["certificates:read".into()],
        resources: vec![GrantResource { id: "r1".into(), label: "普通 1".into() }],
        granted_at: at,
        expires_at: later,
        ended_at: None,
        ended_by: None,
    };
    let token = |grant_id: &str, kind| TokenRecord {
        kind,
        grant_id: grant_id.into(),
        client_id: "conf-client".into(),
        login_id: "conf-user".into(),
        scopes: vec!["certificates:read".into()],
        x5t_s256: "t".into(),
        issued_at: at,
        expires_at: later,
        revoked: false,
    };
    {
        let store = open();
        assert!(store.insert_client(&client).expect("insert"), "a new client is registered");
        assert!(!store.insert_client(&OAuthClient { name: "other".into(), ..client.clone() }).expect("insert"));
        assert_eq!(store.client("conf-client").expect("get"), Some(client.clone()), "the first stays");
        let resource = Resource {
            id: "r1".into(),
            contract: "conf-master".into(),
            label: "普通 1".into(),
            pin_hash: "h".into(),
            registered: Vec::new(),
            created_at: at,
        };
        assert!(store.insert_resource(&resource).expect("insert"));
        assert!(!store.insert_resource(&resource).expect("insert"), "a taken resource ID is refused");
        let changed = store.update_resource("r1", &mut |r| r.registered.push("conf-user".into())).expect("update");
        assert_eq!(changed.map(|r| r.registered), Some(vec!["conf-user".to_owned()]));
        assert_eq!(store.update_resource("nope", &mut |_| {}).expect("update"), None);

        // Of 8 concurrent takers of a flow, and redeemers of a code, one wins.
        store.put_flow("par:1", &flow).expect("put flow");
        let code = CodeRecord {
            grant_id: "conf-grant".into(),
            client_id: "conf-client".into(),
            redirect_uri: "https://conf.example/cb".into(),
            code_challenge: "c".into(),
            expires_at: later,
            used: false,
        };
        store.put_code(&[7; 32], &code).expect("put code");
        let (taken, first) = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    scope.spawn(move || {
                        let took = store.take_flow("par:1").expect("take").is_some();
                        let first = matches!(store.redeem_code(&[7; 32]).expect("redeem"), Some(Redeemed::First(_)));
                        (took, first)
                    })
                })
                .collect();
            let outcomes: Vec<(bool, bool)> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
            (outcomes.iter().filter(|o| o.0).count(), outcomes.iter().filter(|o| o.1).count())
        });
        assert_eq!((taken, first), (1, 1), "one taker of the flow, one first redemption of the code");
        assert!(matches!(store.redeem_code(&[7; 32]).expect("redeem"), Some(Redeemed::Again(c)) if c.used));
        assert_eq!(store.redeem_code(&[8; 32]).expect("redeem"), None);

        store.put_grant(&grant).expect("put grant");
        store.put_grant(&Grant { id: "conf-other".into(), ..grant.clone() }).expect("put grant");
        store.put_token(&[1; 32], &token("conf-grant", TokenKind::Access)).expect("put");
        store.put_token(&[2; 32], &token("conf-grant", TokenKind::Refresh)).expect("put");
        store.put_token(&[3; 32], &token("conf-other", TokenKind::Access)).expect("put");
        assert_eq!(store.revoke_grant_tokens("conf-grant").expect("revoke"), 2, "both tokens of the grant");
        assert_eq!(store.revoke_grant_tokens("conf-grant").expect("revoke"), 0, "none left in force");
        assert!(!store.token(&[3; 32]).expect("get").expect("there").revoked, "another grant's token stays");
        assert!(store.revoke_token(&[3; 32]).expect("revoke"));
        assert!(!store.revoke_token(&[4; 32]).expect("revoke"));
        let ended = store.update_grant("conf-other", &mut |g| g.ended_at = Some(at)).expect("update");
        assert_eq!(ended.and_then(|g| g.ended_at), Some(at));

        let profile = store.update_profile("conf-user", &mut |p| p.networks.push("127.0.0.0/24".into())).expect("p");
        assert_eq!(profile.networks, ["127.0.0.0/24"], "made on first change");
        assert_eq!(store.profile("nobody").expect("get"), None);
    }
    {
        let store = open();
        assert_eq!(store.clients().expect("list").len(), 1, "clients survive reopening");
        assert!(store.token(&[1; 32]).expect("get").expect("there").revoked, "revocations survive reopening");
        assert_eq!(store.grant("conf-grant").expect("get"), Some(grant.clone()));
        assert!(store.profile("conf-user").expect("get").is_some());
        // Before anything lapsed, purge takes the ended grant and its token only.
        assert_eq!(store.purge(at).expect("purge"), 2);
        assert!(store.grant("conf-grant").expect("get").is_some());
        assert!(store.token(&[1; 32]).expect("get").is_some());
        assert_eq!(store.grant("conf-other").expect("get"), None);
        // After: the rest (grant, two tokens, the code).
        assert_eq!(store.purge(later).expect("purge"), 4);
        assert_eq!(store.grants().expect("list"), Vec::new());
        assert!(store.remove_client("conf-client").expect("remove"));
        assert!(!store.remove_client("conf-client").expect("remove"));
        assert!(store.remove_resource("r1").expect("remove"));
    }
}

/// Sessions and tickets: a login ends the account's other session on the same certificate,
/// idle sessions end, changes stick (after reopening, for a shared store), a ticket is claimed
/// once and one ticket per account issues at a time, also under 8 concurrent claimers.
pub fn sessions(open: &dyn Fn() -> Arc<dyn super::sessions::SessionStore>) {
    use super::sessions::{Session, Stage, Ticket, TicketError, TicketState};
    use std::time::Duration;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let minute = Duration::from_secs(60);
    let serial = Serial::from_random([7; 16]).expect("serial");
    let session = |csrf: &str| Session {
        login_id: "conf-user".into(),
        certificate: serial,
        csrf: csrf.into(),
        stage: Stage::OtpPending,
        challenge: None,
        last_seen: now,
    };
    {
        let store = open();
        store.start_session("s1", &session("c1")).expect("start");
        store.start_session("s2", &session("c2")).expect("start");
        assert_eq!(store.touch_session("s1", now, minute).expect("touch"), None, "a new login ends the old session");
        let other = Session { certificate: Serial::from_random([8; 16]).expect("serial"), ..session("c3") };
        store.start_session("s3", &other).expect("start");
        store.update_session("s2", &mut |s| s.stage = Stage::Complete).expect("update");
        store.update_session("gone", &mut |s| s.stage = Stage::Complete).expect("a missing session is no error");
    }
    {
        let store = open();
        let found = store.touch_session("s2", now, minute).expect("touch").expect("s2 still there");
        assert_eq!((found.stage, found.csrf.as_str()), (Stage::Complete, "c2"));
        assert!(
            store.touch_session("s3", now, minute).expect("touch").is_some(),
            "another certificate's session stays"
        );
        let late = now + time::Duration::minutes(2);
        assert_eq!(store.touch_session("s3", late, minute).expect("touch"), None, "idle too long");
        assert_eq!(store.touch_session("s3", now, minute).expect("touch"), None, "and removed");
        store.end_session("s2").expect("end");
        assert_eq!(store.touch_session("s2", now, minute).expect("touch"), None);
    }

    let ticket = |login: &str, minutes: i64| Ticket {
        login_id: login.into(),
        state: TicketState::Preprocessed,
        expires_at: now + time::Duration::minutes(minutes),
    };
    {
        let store = open();
        store.put_ticket("t1", &ticket("conf-user", 5)).expect("put");
        store.put_ticket("t2", &ticket("conf-user", 5)).expect("put");
        store.put_ticket("t-old", &ticket("conf-user", -1)).expect("put");
        store.put_ticket("t-other", &ticket("conf-other", 5)).expect("put");
        assert_eq!(store.claim_ticket("t1", now).expect("claim").map(|t| t.state), Ok(TicketState::Issuing));
        assert_eq!(store.claim_ticket("t1", now).expect("claim"), Err(TicketError::Used));
        assert_eq!(store.claim_ticket("t2", now).expect("claim"), Err(TicketError::Busy), "one issuance per account");
        assert!(store.claim_ticket("t-other", now).expect("claim").is_ok(), "another account is not held up");
        assert_eq!(store.claim_ticket("t-old", now).expect("claim"), Err(TicketError::Expired));
        assert_eq!(store.claim_ticket("nope", now).expect("claim"), Err(TicketError::Unknown));
        assert_eq!(store.install_ticket("t1").expect("install"), Err(TicketError::Used), "not issued yet");
        store.set_ticket("t1", &TicketState::Issued(serial)).expect("set");
    }
    {
        let store = open();
        assert_eq!(store.install_ticket("t1").expect("install"), Ok(serial), "the state stuck");
        assert_eq!(store.install_ticket("t1").expect("install"), Ok(serial), "reporting twice is fine");
        assert!(store.claim_ticket("t2", now).expect("claim").is_ok(), "free once the first is done");
        store.set_ticket("t2", &TicketState::Spent).expect("set");
        assert_eq!(store.claim_ticket("t2", now).expect("claim"), Err(TicketError::Used));
        let removed = store.purge_short_lived(now + time::Duration::minutes(70), minute).expect("purge");
        assert!(removed >= 1, "the expired ticket went");
        assert_eq!(store.claim_ticket("t-old", now).expect("claim"), Err(TicketError::Unknown));
    }

    // 8 claimers of one ticket, then 8 claimers of 8 tickets of one account: one wins each time.
    let store = open();
    store.put_ticket("race", &ticket("conf-race", 5)).expect("put");
    for n in 0..8 {
        store.put_ticket(&format!("race-{n}"), &ticket("conf-race2", 5)).expect("put");
    }
    for keys in [vec!["race".to_owned(); 8], (0..8).map(|n| format!("race-{n}")).collect()] {
        let won = std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .iter()
                .map(|key| {
                    let store = store.clone();
                    scope.spawn(move || store.claim_ticket(key, now).expect("claim").is_ok())
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).filter(|w| *w).count()
        });
        assert_eq!(won, 1, "exactly one of 8 concurrent claims wins");
    }
}
