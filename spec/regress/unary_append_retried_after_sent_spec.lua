-- Regression (issue 12, item 0b): a failed unary append counted as side-effect-free whenever
-- CURLINFO_CONNECT_TIME_T was 0, which holds on every reused connection, so under
-- append_retry_policy = "no_side_effects" an append whose request had been sent in full (its
-- answer cut after 40 bytes) was retried: two copies, acked. "No side effects" must rest on
-- what was sent: curl took no byte of the body.
--
-- The cut: a first append opens the connection, then the proxy's `cut_next_answer 40` lets
-- 40 bytes of the next answer through and kills the connection. Over http:// those 40 bytes
-- are the start of the HTTP/1.1 status and headers; over https:// they are an undecryptable
-- piece of a TLS record, so the client sees no answer at all (and libcurl would resend).
local U = require "support.unary_cut"
local must = U.must

for _, tls in ipairs { false, true } do
  describe(("a unary append whose answer is cut after 40 bytes, on a reused %s connection")
    :format(tls and "HTTP/2 (https)" or "HTTP/1.1 (http)"), function()
    local env
    lazy_setup(function() env = U.start { tls = tls } end)
    lazy_teardown(function() if env then env:stop() end end)
    before_each(function() env:new_proxy() end)

    it("is not retried under no_side_effects (max_attempts = 2): an error, one copy", function()
      local client = env:client("no_side_effects", 2)
      local stream, name = env:stream(client)
      must(stream:append { "first" })
      assert.are.equal(1, env:cut_next_answer(40))
      local ack, err = stream:append { "second" }
      assert.is_nil(ack, "acked: the append was retried although it had been sent")
      assert.are.equal("connection_failed", err.code, tostring(err))
      assert.is_true(err.retryable) -- retryable in general, not side-effect-free
      assert.truthy(err.message:find("may have been applied", 1, true), err.message)
      assert.is_nil(err.message:find("attempts", 1, true), err.message) -- one attempt
      assert.are.same({ "first", "second" }, env:bodies(name))
    end)

    it("is retried under 'all': acked, and the stream holds the lost attempt's copy too",
      function()
        local client = env:client("all", 2)
        local stream, name = env:stream(client)
        must(stream:append { "first" })
        assert.are.equal(1, env:cut_next_answer(40))
        local ack = must(stream:append { "second" })
        -- the first attempt landed at 1 (its answer was cut), the retry at 2
        assert.are.equal(2, ack.start.seq_num)
        assert.are.same({ "first", "second", "second" }, env:bodies(name))
      end)
  end)
end
