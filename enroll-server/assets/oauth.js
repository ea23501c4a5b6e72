// 情報アクセス許可: 許可 works only once 認可手続きを継続する is ticked (the server checks it too).
const box = document.querySelector('input[name="continue"]');
const allow = document.querySelector('button[value="allow"]');
if (box && allow) {
  const sync = () => { allow.disabled = !box.checked; };
  box.addEventListener('change', sync);
  sync();
}
