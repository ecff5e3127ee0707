-- Regression (issue 12, item 0a): when a reused keep-alive connection died after a unary
-- append had been sent and before any byte of its answer, libcurl sent the append again on
-- a fresh connection by itself, below the module's retry policy. With max_attempts = 1 the
-- record was stored twice and acked; a match_seq_num append that had landed came back as a
-- definite seq_num_mismatch (expected = its own end). The append must instead fail with an
-- indefinite connection error (it may have landed), and the stream hold it once.
--
-- The cut: a first append opens the connection, then the proxy's `cut_next_answer 0` kills
-- it as soon as the server starts answering the next request, so that request has reached
-- s2-lite (and landed) while the client sees the reused connection die without an answer.
-- Over http:// (HTTP/1.1 keep-alive) and https:// (HTTP/2 over TLS).
local U = require "support.unary_cut"
local must = U.must

for _, tls in ipairs { false, true } do
  describe(("a unary append on a reused %s connection cut before its answer"):format(
    tls and "HTTP/2 (https)" or "HTTP/1.1 (http)"), function()
    local env
    lazy_setup(function() env = U.start { tls = tls } end)
    lazy_teardown(function() if env then env:stop() end end)
    before_each(function() env:new_proxy() end)

    local function indefinite(err)
      assert.is_table(err)
      assert.are.equal("connection_failed", err.code, tostring(err))
      assert.is_nil(err.status)
      assert.is_nil(err.expected_seq_num)
      assert.truthy(err.message:find("may have been applied", 1, true), err.message)
      assert.is_nil(err.message:find("attempts", 1, true), err.message) -- one attempt
    end

    it("is not resent below the retry policy: max_attempts = 1 stores one copy", function()
      local client = env:client("no_side_effects", 1)
      local stream, name = env:stream(client)
      assert.are.equal(0, must(stream:append { "first" }).start.seq_num)
      local cuts = env.proxy:stats().cuts
      assert.are.equal(1, env:cut_next_answer(0)) -- the kept-alive connection
      local ack, err = stream:append { "second" }
      assert.is_nil(ack, "acked after a cut before any answer byte")
      indefinite(err)
      assert.are.equal(cuts + 1, env.proxy:stats().cuts)
      assert.are.same({ "first", "second" }, env:bodies(name))
      -- the caller can find out what happened: the client recovers on a new connection
      assert.are.equal(2, must(stream:check_tail()).seq_num)
    end)

    it("with match_seq_num, is an indefinite error, not a seq_num_mismatch for itself",
      function()
        -- "all" with one attempt: libcurl's resend is below any policy
        local client = env:client("all", 1)
        local stream, name = env:stream(client)
        must(stream:append { "first" })
        assert.are.equal(1, env:cut_next_answer(0))
        local ack, err = stream:append({ "second" }, { match_seq_num = 1 })
        assert.is_nil(ack)
        assert.are_not.equal("seq_num_mismatch", err.code, tostring(err))
        indefinite(err)
        assert.are.same({ "first", "second" }, env:bodies(name))
      end)

    it("a read on such a cut is still resent by libcurl (idempotent): max_attempts = 1 succeeds",
      function()
        local client = env:client("no_side_effects", 1)
        local stream = env:stream(client)
        must(stream:append { "first" })
        assert.are.equal(1, env:cut_next_answer(0))
        local cuts = env.proxy:stats().cuts
        assert.are.equal(1, must(stream:check_tail()).seq_num)
        assert.are.equal(cuts + 1, env.proxy:stats().cuts) -- it did go through the cut
      end)
  end)
end
