-- A lambda chain for the serve tests: strings come back upper-cased (after a 5 ms wait, so the
-- run really is asynchronous), other values as {got = value}; {fail = true} raises.
local catena = require("catena")
return catena.lambda(function(x)
  if type(x) == "table" and x.fail then error("asked to fail") end
  if type(x) == "string" then
    catena.sleep(5)
    return x:upper()
  end
  return { got = x }
end, "upper")
