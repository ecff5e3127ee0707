-- busted output handler: the plain terminal output, then one closing line that CI reads:
--   N passed, N failed, N skipped
-- Errors (a spec that raised) count as failures.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal"(options)

  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(("%d passed, %d failed, %d skipped\n"):format(
      handler.successesCount, failed, handler.pendingsCount))
    io.flush()
    return nil, true
  end)

  return handler
end
