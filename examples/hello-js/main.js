// hello-js: an OpenWhisk-style JavaScript action for Cloister (docs/js.md).
//
// main receives the request's JSON object and returns the response's JSON
// (a value, or a promise of one). `calls` counts the calls this instance
// has served: the platform starts every call from the engine's clean
// snapshot, so it is always 1.
let calls = 0;

function main(params) {
  calls++;
  const name = params.name || "stranger";
  return { greeting: `Hello, ${name}!`, calls };
}
