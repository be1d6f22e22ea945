// Drives Cloister's OpenWhisk-compatible API with the official `openwhisk`
// npm client. Run by cmd/cloister/openwhisk_e2e_test.go against a real
// `cloister up`, with the values of DATA/wskprops in APIHOST, AUTH and
// NAMESPACE. Exits non-zero, with the failed step, on any mismatch.
'use strict'
const assert = require('node:assert/strict')
const openwhisk = require('openwhisk')

const apihost = process.env.APIHOST
const auth = process.env.AUTH
const namespace = process.env.NAMESPACE || '_'
assert.ok(apihost && auth, 'APIHOST and AUTH must be set (from DATA/wskprops)')
const ow = openwhisk({ apihost, api_key: auth, namespace })

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function step (name, fn) {
  try {
    await fn()
    console.log('ok   ' + name)
  } catch (err) {
    console.error('FAIL ' + name + ': ' + (err && err.stack ? err.stack : err))
    if (err && err.error) console.error('body: ' + JSON.stringify(err.error))
    process.exit(1)
  }
}

async function main () {
  const hello = 'function main(params) { return { greeting: "Hello, " + (params.name || "stranger") + "!", version: 1 } }'
  await step('create a JS action from source', async () => {
    const a = await ow.actions.create({ name: 'hello', action: hello, kind: 'nodejs:default' })
    assert.equal(a.name, 'hello')
    assert.equal(a.exec.kind, 'nodejs:default')
    assert.equal(a.version, '0.0.1')
    const deployer = a.annotations.find(kv => kv.key === 'cloister-deployer')
    assert.equal(deployer && deployer.value, 'gateway-trusted')
  })

  await step('create again without overwrite is refused (409)', async () => {
    await assert.rejects(ow.actions.create({ name: 'hello', action: hello }), err => err.statusCode === 409)
  })

  await step('invoke blocking with params, result', async () => {
    const r = await ow.actions.invoke({ name: 'hello', blocking: true, result: true, params: { name: 'Ada' } })
    assert.deepEqual(r, { greeting: 'Hello, Ada!', version: 1 })
  })

  await step('invoke blocking, whole activation', async () => {
    const a = await ow.actions.invoke({ name: 'hello', blocking: true, params: { name: 'Bob' } })
    assert.match(a.activationId, /^[0-9a-f]{32}$/)
    assert.equal(a.response.status, 'success')
    assert.equal(a.response.success, true)
    assert.deepEqual(a.response.result, { greeting: 'Hello, Bob!', version: 1 })
    assert.ok(a.end >= a.start && a.duration === a.end - a.start)
    const trust = a.annotations.find(kv => kv.key === 'trust')
    assert.equal(trust && trust.value, 'gateway-trusted')
  })

  let asyncID
  await step('invoke non-blocking and fetch the activation', async () => {
    const acc = await ow.actions.invoke({ name: 'hello', params: { name: 'Cy' } })
    asyncID = acc.activationId
    assert.match(asyncID, /^[0-9a-f]{32}$/)
    let a
    for (let i = 0; i < 200 && !a; i++) {
      try {
        a = await ow.activations.get({ name: asyncID })
      } catch (err) {
        if (err.statusCode !== 404) throw err
        await sleep(50)
      }
    }
    assert.ok(a, 'activation never appeared')
    assert.equal(a.activationId, asyncID)
    assert.equal(a.name, 'hello')
    assert.deepEqual(a.response.result, { greeting: 'Hello, Cy!', version: 1 })
    const res = await ow.activations.result({ name: asyncID })
    assert.equal(res.success, true)
    assert.deepEqual(res.result, { greeting: 'Hello, Cy!', version: 1 })
    const logs = await ow.activations.logs({ name: asyncID })
    assert.ok(Array.isArray(logs.logs))
  })

  await step('list activations', async () => {
    const list = await ow.activations.list({ name: 'hello', limit: 10 })
    assert.ok(Array.isArray(list))
    assert.ok(list.length >= 3, 'expected at least 3 activations, got ' + list.length)
    assert.ok(list.some(a => a.activationId === asyncID), 'the non-blocking activation is listed')
    assert.ok(list.every(a => a.name === 'hello'))
  })

  await step('update the action', async () => {
    const v2 = hello.replace('version: 1', 'version: 2')
    const a = await ow.actions.update({ name: 'hello', action: v2 })
    assert.equal(a.version, '0.0.2')
    const r = await ow.actions.invoke({ name: 'hello', blocking: true, result: true, params: { name: 'Ada' } })
    assert.deepEqual(r, { greeting: 'Hello, Ada!', version: 2 })
    const got = await ow.actions.get({ name: 'hello' })
    assert.equal(got.exec.code, v2)
  })

  await step('list actions', async () => {
    const list = await ow.actions.list()
    assert.ok(list.some(a => a.name === 'hello'))
  })

  await step('create a sequence of two actions and invoke it', async () => {
    await ow.actions.create({ name: 'double', action: 'function main(p) { return { n: p.n * 2 } }', kind: 'nodejs:20' })
    await ow.actions.create({ name: 'inc', action: 'async function main(p) { return { n: p.n + 1 } }' })
    const ns = namespace === '_' ? '_' : namespace
    const seq = await ow.actions.create({ name: 'double-inc', action: { exec: { kind: 'sequence', components: ['/' + ns + '/double', '/' + ns + '/inc'] } } })
    assert.equal(seq.exec.kind, 'sequence')
    const r = await ow.actions.invoke({ name: 'double-inc', blocking: true, result: true, params: { n: 20 } })
    assert.deepEqual(r, { n: 41 })
    const a = await ow.actions.invoke({ name: 'double-inc', blocking: true, params: { n: 1 } })
    assert.equal(a.logs.length, 2, 'a sequence logs its two component activations')
  })

  await step('create and invoke a python:3 action', async () => {
    const src = 'import json, hashlib\n\ndef main(params):\n    name = params.get("name", "stranger")\n    return {"greeting": "Hello, " + name + "!", "sha": hashlib.sha256(name.encode()).hexdigest()[:8]}\n'
    const a = await ow.actions.create({ name: 'hello-py', action: src, kind: 'python:3' })
    assert.equal(a.exec.kind, 'python:3')
    const r = await ow.actions.invoke({ name: 'hello-py', blocking: true, result: true, params: { name: 'Ada' } })
    assert.deepEqual(r, { greeting: 'Hello, Ada!', sha: '99a563ab' })
    const got = await ow.actions.get({ name: 'hello-py' })
    assert.equal(got.exec.kind, 'python:3')
    assert.equal(got.exec.code, src)
  })

  await step('a python:default action that raises is an error activation', async () => {
    await ow.actions.create({ name: 'boom-py', action: 'def main(params):\n    raise ValueError("boom")\n', kind: 'python:default' })
    await assert.rejects(ow.actions.invoke({ name: 'boom-py', blocking: true, result: true }), err => {
      assert.equal(err.statusCode, 502)
      return true
    })
  })

  await step('an application error is an error activation', async () => {
    await ow.actions.create({ name: 'boom', action: 'function main() { throw new Error("boom") }' })
    await assert.rejects(ow.actions.invoke({ name: 'boom', blocking: true, result: true }), err => {
      assert.equal(err.statusCode, 502)
      return true
    })
  })

  await step('delete the action', async () => {
    const d = await ow.actions.delete({ name: 'hello' })
    assert.equal(d.name, 'hello')
    await assert.rejects(ow.actions.get({ name: 'hello' }), err => err.statusCode === 404)
  })

  await step('a wrong key is refused (401)', async () => {
    const [uuid] = auth.split(':')
    const bad = openwhisk({ apihost, api_key: uuid + ':clk_' + 'A'.repeat(43), namespace })
    await assert.rejects(bad.actions.list(), err => {
      assert.equal(err.statusCode, 401)
      assert.equal(err.error.error, 'The supplied authentication is invalid')
      return true
    })
  })
  console.log('all OpenWhisk client checks passed')
}

main()
