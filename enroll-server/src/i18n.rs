//! The pages' words, in Japanese (the default) and English (`?lang=en` or Accept-Language),
//! including what each error code says to a reader. Every user-facing word is here: the
//! templates and the page scripts (through data attributes) take theirs from [`Text`].

use axum::http::HeaderMap;

use crate::error::{ErrorCode, WebError};

/// A page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// 日本語 (default).
    Ja,
    /// English.
    En,
}

impl Text {
    /// A revocation reason in words.
    pub fn reason(&self, reason: pki::RevocationReason) -> &'static str {
        use pki::RevocationReason as R;
        let index = match reason {
            R::Unspecified => 0,
            R::KeyCompromise => 1,
            R::CaCompromise => 2,
            R::AffiliationChanged => 3,
            R::Superseded => 4,
            R::CessationOfOperation => 5,
            R::PrivilegeWithdrawn => 6,
        };
        self.reasons[index]
    }

    /// A certificate status in words.
    pub fn status(&self, status: &str) -> &'static str {
        match status {
            "valid" => self.status_valid,
            "revoked" => self.status_revoked,
            "superseded" => self.status_superseded,
            _ => self.status_expired,
        }
    }
}

impl Lang {
    /// `?lang=` wins; then the first of ja/en in Accept-Language; then Japanese.
    pub fn detect(query_lang: Option<&str>, headers: &HeaderMap) -> Self {
        match query_lang {
            Some("en") => return Self::En,
            Some("ja") => return Self::Ja,
            _ => {}
        }
        let accept = headers.get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("");
        for part in accept.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.starts_with("ja") {
                return Self::Ja;
            }
            if tag.starts_with("en") {
                return Self::En;
            }
        }
        Self::Ja
    }

    /// The `lang` attribute and query value.
    pub fn code(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    /// This language's words.
    pub fn text(self) -> &'static Text {
        match self {
            Self::Ja => &JA,
            Self::En => &EN,
        }
    }

    /// The other language (the pages' language switch).
    pub fn other(self) -> Self {
        match self {
            Self::Ja => Self::En,
            Self::En => Self::Ja,
        }
    }

    /// What a page says of `error`. English pages show the API's message; Japanese pages say
    /// the code's meaning, with the specific English detail where it helps (dates, serials).
    pub fn error(self, error: &WebError) -> String {
        if self == Self::En {
            return error.message.clone();
        }
        let with_detail = |base: &str| format!("{base}（{}）", error.message);
        match error.code {
            ErrorCode::InvalidCredentials => "ログインIDまたはログインパスワードが正しくありません。".into(),
            ErrorCode::AccountLocked if error.message.contains("operator") => {
                "パスワードを続けて間違えたため、ロックされています。運用担当者にロック解除を依頼してください。".into()
            }
            ErrorCode::AccountLocked => {
                "パスワードを続けて間違えたため、ロックされています。管理者（マスターユーザ）にロック解除を依頼してください。".into()
            }
            ErrorCode::AccountInactive => "このアカウントは利用できません。".into(),
            ErrorCode::RateLimited => "しばらく時間をおいてから、もう一度お試しください。".into(),
            ErrorCode::CertificateValid => format!("有効な電子証明書がすでにあります。({})", error.message),
            ErrorCode::CertificateRequired => self.text().no_certificate.into(),
            ErrorCode::CertificateRevoked => "この電子証明書は失効しています。".into(),
            ErrorCode::CertificateSuperseded => {
                "この電子証明書は再取得により置き換えられました。新しい電子証明書をお使いください。".into()
            }
            ErrorCode::CertificateExpired => "この電子証明書は有効期限が切れています。再取得してください。".into(),
            ErrorCode::CertificateUnknown => "この電子証明書は、この認証局が発行したものではありません。".into(),
            ErrorCode::TicketUnknown | ErrorCode::TicketExpired | ErrorCode::TicketUsed => {
                "この取得手続きは使えません（期限切れまたは使用済み）。最初からやり直してください。".into()
            }
            ErrorCode::IssuanceInProgress => "この利用者の電子証明書を発行中です。完了してからもう一度お試しください。".into(),
            ErrorCode::CsrRejected => with_detail("証明書要求を受け付けられませんでした。"),
            ErrorCode::NameNotAllowed => with_detail("この利用者に許可されていない名前が含まれています。"),
            ErrorCode::InvalidOtp => "ワンタイムパスワードが正しくありません。".into(),
            ErrorCode::OtpStopped => {
                "ワンタイムパスワードを続けて間違えたため、利用停止になりました。管理者（マスターユーザ）に利用停止解除を依頼してください（マスターユーザは運用担当者へ）。".into()
            }
            ErrorCode::OtpRequired => "ワンタイムパスワードを入力してください。".into(),
            ErrorCode::OtpSetupRequired => "ワンタイムパスワードの初期設定（トークン発行）が必要です。".into(),
            ErrorCode::OtpReissueWait => with_detail("トークンの失効後、新しいトークンはまだ発行できません。"),
            ErrorCode::LoginRequired => "ログインしてください。".into(),
            ErrorCode::MasterOnly => "この操作はマスターユーザのみ行えます。".into(),
            ErrorCode::Exists => "このログインIDはすでに使われています。".into(),
            ErrorCode::InvalidRequest | ErrorCode::InvalidForm | ErrorCode::InvalidJson => {
                with_detail("入力内容に誤りがあります。")
            }
            ErrorCode::BodyTooLarge => "送信された内容が大きすぎます。".into(),
            ErrorCode::InvalidSerial => "シリアル番号が正しくありません。".into(),
            ErrorCode::InvalidReason | ErrorCode::ReasonNotAllowed => "この失効理由は選べません。".into(),
            ErrorCode::NotRevocable => "この電子証明書は失効できません。".into(),
            ErrorCode::Csrf => "画面の有効期限が切れました。もう一度やり直してください。".into(),
            ErrorCode::NotFound => "見つかりません。".into(),
            ErrorCode::Unavailable => "認証局に接続できません。しばらくしてからもう一度お試しください。".into(),
            ErrorCode::Timeout => "処理に時間がかかりすぎました。もう一度お試しください。".into(),
            ErrorCode::Internal => "システムエラーが発生しました。時間をおいてもう一度お試しください。".into(),
        }
    }
}

/// Every fixed string of the pages.
#[allow(missing_docs)]
#[derive(Debug)]
pub struct Text {
    pub app: &'static str,
    pub other_lang: &'static str,
    pub acquire_title: &'static str,
    pub reacquire_title: &'static str,
    pub acquire_lead: &'static str,
    pub reacquire_lead: &'static str,
    pub login_id: &'static str,
    pub password: &'static str,
    pub obtain: &'static str,
    pub preprocessing_title: &'static str,
    pub preprocessing_lead: &'static str,
    pub preprocessed: &'static str,
    pub none: &'static str,
    pub status_valid: &'static str,
    pub status_revoked: &'static str,
    pub status_superseded: &'static str,
    pub status_expired: &'static str,
    pub start_title: &'static str,
    pub start_lead: &'static str,
    pub start_note: &'static str,
    pub key_type: &'static str,
    pub key_ecdsa: &'static str,
    pub key_rsa: &'static str,
    pub issuing_title: &'static str,
    pub issuing_lead: &'static str,
    pub installed_title: &'static str,
    pub installed_lead: &'static str,
    pub subject: &'static str,
    pub serial: &'static str,
    pub validity: &'static str,
    pub fingerprint: &'static str,
    pub p12_password: &'static str,
    pub p12_password_confirm: &'static str,
    pub p12_password_hint: &'static str,
    pub download_p12: &'static str,
    pub download_cert_pem: &'static str,
    pub download_key_pem: &'static str,
    pub import_title: &'static str,
    pub import_steps: &'static str,
    pub macos_note: &'static str,
    pub close_note: &'static str,
    pub back_to_start: &'static str,
    pub cert_login_link: &'static str,
    pub reacquire_link: &'static str,
    pub login_title: &'static str,
    pub login_lead: &'static str,
    pub login_certificate: &'static str,
    pub login_button: &'static str,
    pub no_certificate: &'static str,
    pub certificate_unusable: &'static str,
    pub home_title: &'static str,
    pub your_certificates: &'static str,
    pub days_left: &'static str,
    pub status: &'static str,
    pub renewal_banner: &'static str,
    pub users_title: &'static str,
    pub add_user: &'static str,
    pub new_password: &'static str,
    pub unlock: &'static str,
    pub locked: &'static str,
    pub role: &'static str,
    pub logout: &'static str,
    pub js_required: &'static str,
    pub passwords_differ: &'static str,
    pub password_too_short: &'static str,
    pub issue_failed: &'static str,
    pub wrong_password: &'static str,
    pub error_title: &'static str,
    pub revoke_title: &'static str,
    pub revoke: &'static str,
    pub revocation_reason: &'static str,
    pub confirm_password: &'static str,
    pub token_title: &'static str,
    pub token_lead: &'static str,
    pub token_for: &'static str,
    pub token_ttl: &'static str,
    pub create_token: &'static str,
    pub token_shown_once: &'static str,
    pub token_expires: &'static str,
    pub back_home: &'static str,
    pub otp_login_title: &'static str,
    pub otp_login_lead: &'static str,
    pub otp_code: &'static str,
    pub otp_submit: &'static str,
    pub otp_token_title: &'static str,
    pub otp_token_lead: &'static str,
    pub otp_mail: &'static str,
    pub otp_activation_password: &'static str,
    pub otp_issue_button: &'static str,
    pub otp_service_id: &'static str,
    pub otp_user_id: &'static str,
    pub otp_scan: &'static str,
    pub otp_uri: &'static str,
    pub otp_verify_lead: &'static str,
    pub otp_verify_button: &'static str,
    pub otp_active_note: &'static str,
    pub otp_reissue_from: &'static str,
    pub otp_setup_required: &'static str,
    pub confirmation_password: &'static str,
    pub card_cell: &'static str,
    pub hw_title: &'static str,
    pub hw_lead: &'static str,
    pub hw_serial: &'static str,
    pub hw_ask: &'static str,
    pub hw_button: &'static str,
    pub otp_unlock: &'static str,
    pub otp_revoke: &'static str,
    pub otp_title: &'static str,
    pub otp_none: &'static str,
    pub otp_pending: &'static str,
    pub otp_active: &'static str,
    pub otp_stopped: &'static str,
    pub otp_revoked: &'static str,
    pub otp_manage: &'static str,
    pub reasons: [&'static str; 7],
}

const JA: Text = Text {
    app: "inkan 電子証明書認証局",
    other_lang: "English",
    acquire_title: "電子証明書取得",
    reacquire_title: "電子証明書再取得",
    acquire_lead: "電子証明書取得に必要な本人認証を行います。ログインIDとログインパスワードを入力し「取得」ボタンを押してください。",
    reacquire_lead: "有効期限が切れた、または近づいている電子証明書を取得し直します。ログインIDとログインパスワードを入力し「取得」ボタンを押してください。",
    login_id: "ログインID",
    password: "ログインパスワード",
    obtain: "取得",
    preprocessing_title: "電子証明書取得前処理中",
    preprocessing_lead: "電子証明書取得前の処理中です。処理が完了するまで、Webブラウザを終了しないでください。",
    preprocessed: "電子証明書取得前処理が完了しました。",
    none: "（なし）",
    status_valid: "有効",
    status_revoked: "失効",
    status_superseded: "再取得により置換",
    status_expired: "期限切れ",
    start_title: "電子証明書取得開始",
    start_lead: "電子証明書の取得を開始します。「取得」ボタンを押してください。",
    start_note: "※鍵はこのブラウザの中で作られ、秘密鍵はサーバーに送られません。電子証明書はご利用になるパソコンで取得してください。",
    key_type: "鍵の種類",
    key_ecdsa: "ECDSA P-256（推奨）",
    key_rsa: "RSA 2048ビット",
    issuing_title: "電子証明書発行処理中",
    issuing_lead: "電子証明書を発行しています。このままお待ちください。",
    installed_title: "電子証明書の発行が完了しました",
    installed_lead: "証明書ファイルにパスワードを付けて保存し、お使いのパソコンまたはブラウザに取り込んでください。",
    subject: "発行先",
    serial: "シリアル番号",
    validity: "有効期間",
    fingerprint: "SHA-256 フィンガープリント",
    p12_password: "証明書ファイルのパスワード",
    p12_password_confirm: "パスワード（確認）",
    p12_password_hint: "8文字以上。取り込むときに入力します。",
    download_p12: "証明書ファイル（PKCS#12）を保存",
    download_cert_pem: "証明書と中間証明書（PEM）を保存",
    download_key_pem: "秘密鍵（暗号化PEM）を保存",
    import_title: "取り込み方",
    import_steps: "Windows: 保存した .p12 ファイルをダブルクリックし、証明書のインポートウィザードに従います。macOS: キーチェーンアクセスで「ファイル」→「読み込む」を選びます。Firefox: 設定 →「証明書を表示」→「あなたの証明書」→「インポート」。Linux の Chromium: pk12util -i ファイル名.p12 -d sql:$HOME/.pki/nssdb",
    macos_note: "ご注意: 古い macOS（10.15 以前など）は AES で暗号化された PKCS#12 ファイルを読み込めないことがあります。その場合は PEM 形式の証明書と秘密鍵をお使いください。",
    close_note: "取り込みが済んだら、一度ブラウザを終了してください。次回から電子証明書でログインできます。",
    back_to_start: "最初からやり直す",
    cert_login_link: "電子証明書ログイン",
    reacquire_link: "電子証明書の有効期限が切れたお客様は「電子証明書再取得」",
    login_title: "電子証明書ログイン",
    login_lead: "電子証明書を確認しました。ログインパスワードを入力してください。",
    login_certificate: "電子証明書",
    login_button: "ログイン",
    no_certificate: "電子証明書が提示されませんでした。電子証明書を取得してから、ブラウザを再起動してこのページを開いてください。",
    certificate_unusable: "この電子証明書は使用できません",
    home_title: "ご利用状況",
    your_certificates: "電子証明書",
    days_left: "残り日数",
    status: "状態",
    renewal_banner: "電子証明書の有効期限が近づいています。再取得してください。残り日数:",
    users_title: "利用者（一般ユーザ）",
    add_user: "利用者を追加",
    new_password: "初期パスワード",
    unlock: "ロック解除",
    locked: "ロック中",
    role: "権限",
    logout: "ログアウト",
    js_required: "この画面では JavaScript を有効にしてください。",
    passwords_differ: "パスワードが一致しません。",
    password_too_short: "パスワードは8文字以上にしてください。",
    issue_failed: "発行できませんでした: ",
    wrong_password: "ログインパスワードが正しくありません。",
    error_title: "エラー",
    revoke_title: "電子証明書の失効",
    revoke: "失効させる",
    revocation_reason: "失効理由",
    confirm_password: "確認のためログインパスワード",
    token_title: "機器登録用ワンタイムトークン（EST）",
    token_lead: "機器が EST で電子証明書を1回だけ取得するためのトークンを発行します。ログインパスワードの代わりに機器へ設定してください。",
    token_for: "対象のログインID",
    token_ttl: "有効期間",
    create_token: "トークンを発行",
    token_shown_once: "このトークンは一度だけ表示されます。控えたうえで機器に設定してください（認証局にはハッシュ値のみが保存されます）。",
    token_expires: "有効期限",
    back_home: "ご利用状況に戻る",
    otp_login_title: "ワンタイムパスワード認証",
    otp_login_lead: "スマートフォンのアプリ（トークン）に表示されているワンタイムパスワードを入力してください。",
    otp_code: "ワンタイムパスワード",
    otp_submit: "認証",
    otp_token_title: "トークン発行",
    otp_token_lead: "ワンタイムパスワードのトークンを発行します。トークン用のメールアドレスと利用開始パスワード（数字4〜8桁）を入力してください。",
    otp_mail: "メールアドレス",
    otp_activation_password: "利用開始パスワード（数字4〜8桁）",
    otp_issue_button: "トークンを発行",
    otp_service_id: "サービスID",
    otp_user_id: "ユーザID",
    otp_scan: "認証アプリ（Google Authenticator、Microsoft Authenticator、FreeOTP など）で次のQRコードを読み取ってください。ワンタイムパスワードアプリではサービスID・ユーザID・利用開始パスワードを入力します。",
    otp_uri: "QRコードを読み取れない場合は、次の設定用URIをアプリに入力してください",
    otp_verify_lead: "認証確認：アプリに表示されたワンタイムパスワードを入力してください。確認が済むとトークンが利用可能になります。",
    otp_verify_button: "認証確認",
    otp_active_note: "このログインIDにはご利用中のトークンがあります（1つのログインIDに1台）。機種変更の際は、マスターユーザがトークンを失効させてから発行し直してください。",
    otp_reissue_from: "トークンが失効したため、新しいトークンは次の日時から発行できます",
    otp_setup_required: "ワンタイムパスワードの初期設定が済んでいないため、トークンの発行のみ行えます。",
    confirmation_password: "確認用パスワード",
    card_cell: "お客様カードの数字",
    hw_title: "ハードウェアトークンの登録",
    hw_lead: "お手元のハードウェアトークンの裏面のシリアル番号と、ボタンを押して表示されたワンタイムパスワードを入力してください。",
    hw_serial: "シリアル番号",
    hw_ask: "ログイン時にワンタイムパスワードを入力する",
    hw_button: "登録",
    otp_unlock: "利用停止解除",
    otp_revoke: "トークンの失効",
    otp_title: "ワンタイムパスワード",
    otp_none: "未設定",
    otp_pending: "認証確認待ち",
    otp_active: "利用中",
    otp_stopped: "利用停止",
    otp_revoked: "失効",
    otp_manage: "トークン発行・認証確認",
    reasons: [
        "理由なし",
        "秘密鍵の漏えい（疑いを含む）",
        "認証局の鍵の漏えい",
        "所属の変更",
        "再取得による置換",
        "利用終了",
        "権限の取り消し",
    ],
};

const EN: Text = Text {
    app: "inkan certificate authority",
    other_lang: "日本語",
    acquire_title: "Obtain a certificate",
    reacquire_title: "Obtain a certificate again",
    acquire_lead: "Identify yourself to obtain your client certificate: enter your login ID and password and press Obtain.",
    reacquire_lead: "Obtain a new certificate when yours has expired or is about to: enter your login ID and password and press Obtain.",
    login_id: "Login ID",
    password: "Password",
    obtain: "Obtain",
    preprocessing_title: "Preparing",
    preprocessing_lead: "Preparing to issue your certificate. Do not close the browser until this finishes.",
    preprocessed: "Preparation done.",
    none: "(none)",
    status_valid: "valid",
    status_revoked: "revoked",
    status_superseded: "superseded by a newer one",
    status_expired: "expired",
    start_title: "Start",
    start_lead: "Press Obtain to create your key and request your certificate.",
    start_note: "Your key is made inside this browser; the private key is never sent to the server. Obtain the certificate on the computer you will use it on.",
    key_type: "Key type",
    key_ecdsa: "ECDSA P-256 (recommended)",
    key_rsa: "RSA 2048-bit",
    issuing_title: "Issuing",
    issuing_lead: "Your certificate is being issued. Please wait.",
    installed_title: "Your certificate is ready",
    installed_lead: "Save it as a password-protected file, then import it into your computer or browser.",
    subject: "Subject",
    serial: "Serial number",
    validity: "Valid",
    fingerprint: "SHA-256 fingerprint",
    p12_password: "Password for the certificate file",
    p12_password_confirm: "Password (again)",
    p12_password_hint: "At least 8 characters; you type it when importing.",
    download_p12: "Save certificate file (PKCS#12)",
    download_cert_pem: "Save certificate and chain (PEM)",
    download_key_pem: "Save private key (encrypted PEM)",
    import_title: "How to import",
    import_steps: "Windows: double-click the saved .p12 file and follow the Certificate Import Wizard. macOS: Keychain Access, File → Import Items. Firefox: Settings → View Certificates → Your Certificates → Import. Chromium on Linux: pk12util -i file.p12 -d sql:$HOME/.pki/nssdb",
    macos_note: "Note: older macOS versions (10.15 and earlier) may refuse PKCS#12 files encrypted with AES. If so, use the PEM certificate and key instead.",
    close_note: "After importing, restart your browser. From then on you can log in with your certificate.",
    back_to_start: "Start again",
    cert_login_link: "Certificate login",
    reacquire_link: "Certificate expired? Obtain it again",
    login_title: "Certificate login",
    login_lead: "Your certificate was accepted. Enter your password.",
    login_certificate: "Certificate",
    login_button: "Log in",
    no_certificate: "No client certificate was presented. Obtain a certificate first, restart your browser and open this page again.",
    certificate_unusable: "This certificate cannot be used",
    home_title: "Your account",
    your_certificates: "Certificates",
    days_left: "Days left",
    status: "Status",
    renewal_banner: "Your certificate expires soon: obtain it again. Days left:",
    users_title: "Users (general users)",
    add_user: "Add user",
    new_password: "Initial password",
    unlock: "Unlock",
    locked: "locked",
    role: "Role",
    logout: "Log out",
    js_required: "This page needs JavaScript.",
    passwords_differ: "The passwords differ.",
    password_too_short: "Use at least 8 characters.",
    issue_failed: "Not issued: ",
    wrong_password: "The password is not correct.",
    error_title: "Error",
    revoke_title: "Revoke a certificate",
    revoke: "Revoke",
    revocation_reason: "Reason",
    confirm_password: "Your password, to confirm",
    token_title: "One-time enrollment token for a machine (EST)",
    token_lead: "Make a token a machine uses once, instead of the login password, to obtain a certificate over EST.",
    token_for: "For login ID",
    token_ttl: "Valid for",
    create_token: "Make a token",
    token_shown_once: "This token is shown once: copy it to the machine now (the CA keeps only its hash).",
    token_expires: "Expires",
    back_home: "Back to your account",
    otp_login_title: "One-time password",
    otp_login_lead: "Enter the one-time password your authenticator app (token) shows.",
    otp_code: "One-time password",
    otp_submit: "Continue",
    otp_token_title: "Issue a token",
    otp_token_lead: "Issue a one-time-password token. Give a mail address for the token and an activation password (4 to 8 digits).",
    otp_mail: "Mail address",
    otp_activation_password: "Activation password (4 to 8 digits)",
    otp_issue_button: "Issue the token",
    otp_service_id: "Service ID",
    otp_user_id: "User ID",
    otp_scan: "Scan this QR code with an authenticator app (Google Authenticator, Microsoft Authenticator, FreeOTP...). An OTP app that asks for them takes the service ID, user ID and activation password instead.",
    otp_uri: "If the code cannot be scanned, enter this setup URI in the app",
    otp_verify_lead: "First verification: enter the code the app shows. The token is in use once it is confirmed.",
    otp_verify_button: "Confirm",
    otp_active_note: "This login ID has a token in use (one device per login ID). To change devices, the master user revokes it first, then a new one is issued.",
    otp_reissue_from: "The token was revoked; a new one can be issued from",
    otp_setup_required: "One-time passwords are required and this login ID has no token yet: issuing one is all you can do now.",
    confirmation_password: "Confirmation password",
    card_cell: "Customer card digit",
    hw_title: "Register a hardware token",
    hw_lead: "Enter the serial number on the back of your hardware token and the one-time password it shows when you press its button.",
    hw_serial: "Serial number",
    hw_ask: "Ask for the one-time password at login",
    hw_button: "Register",
    otp_unlock: "Lift the OTP stop",
    otp_revoke: "Revoke the token",
    otp_title: "One-time password",
    otp_none: "not set up",
    otp_pending: "waiting for first verification",
    otp_active: "in use",
    otp_stopped: "stopped",
    otp_revoked: "revoked",
    otp_manage: "Issue or confirm a token",
    reasons: [
        "Unspecified",
        "Key compromise (or suspected)",
        "CA compromise",
        "Affiliation changed",
        "Superseded by a reissue",
        "No longer needed",
        "Privilege withdrawn",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn detection_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::detect(None, &headers), Lang::Ja);
        headers.insert("accept-language", HeaderValue::from_static("en-US,en;q=0.9,ja;q=0.8"));
        assert_eq!(Lang::detect(None, &headers), Lang::En);
        assert_eq!(Lang::detect(Some("ja"), &headers), Lang::Ja);
        headers.insert("accept-language", HeaderValue::from_static("fr, ja;q=0.5"));
        assert_eq!(Lang::detect(None, &headers), Lang::Ja);
        assert_eq!(Lang::detect(Some("en"), &HeaderMap::new()), Lang::En);
    }
}
