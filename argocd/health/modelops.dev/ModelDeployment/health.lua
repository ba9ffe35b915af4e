-- Argo CD health check for modelops.dev/ModelDeployment
-- (argocd-cm key resource.customizations.health.modelops.dev_ModelDeployment).
--
-- Argo CD runs it in gopher-lua (Lua 5.1) with only the base, table and a safe os library open,
-- and gives it one second: no string or math library, no string methods. tostring() is used on
-- integers only (gopher-lua and C Lua print fractions differently).
--
--   Healthy      phase Serving, servingVersion == spec.modelVersion, status of this generation
--   Progressing  no status yet, status of an older generation, Pending/Training/RollingOut
--                (a Shadow or Canary rollout in progress, or paused for its analysis, is
--                RollingOut; the Progressing condition says which step and why)
--   Degraded     phase Degraded or Failed, or the gate rejected the version Git asks for
--                (a candidate the live analysis rolled back is Degraded: still serving the
--                stable version)
--                (the message is the CR's own: gate message, Degraded or Trained condition)
--   Unknown      a phase this script does not know (a newer operator)
-- Missing is Argo CD's own verdict for an object that does not exist; it never runs this script.

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

-- The first argument that is a non-empty string.
local function first(...)
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if type(m) == "string" and m ~= "" then
      return m
    end
  end
  return nil
end

-- 0.96666 -> "96.67%" without string.format or math.floor (x % 1 is the fraction of x).
local function percent(x)
  if type(x) ~= "number" then
    return nil
  end
  local hundredths = x * 10000 + 0.5
  hundredths = hundredths - hundredths % 1
  local frac = hundredths % 100
  local whole = (hundredths - frac) / 100
  if frac < 10 then
    return tostring(whole) .. ".0" .. tostring(frac) .. "%"
  end
  return tostring(whole) .. "." .. tostring(frac) .. "%"
end

local function serving(status)
  if type(status.servingVersion) ~= "string" or status.servingVersion == "" then
    return "nothing is serving"
  end
  local text = "serving " .. status.servingVersion
  local acc = percent(status.accuracy)
  if acc ~= nil then
    text = text .. " (accuracy " .. acc .. ")"
  end
  return text
end

local hs = {}
local spec = obj.spec or {}
local metadata = obj.metadata or {}
local status = obj.status
local desired = spec.modelVersion or "?"

if type(status) ~= "table" or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelops operator to report the status of " .. desired
  return hs
end

local generation = metadata.generation
local observed = status.observedGeneration
if type(generation) == "number" and (type(observed) ~= "number" or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelops operator to observe generation " .. tostring(generation)
  if type(observed) == "number" then
    hs.message = hs.message .. " (status is of generation " .. tostring(observed) .. ")"
  end
  return hs
end

local phase = status.phase
local gate = status.gate
if type(gate) ~= "table" then
  gate = {}
end

local ready = ""
if type(status.ready) == "string" and status.ready ~= "" then
  ready = ", " .. status.ready .. " ready"
end

if phase == "Serving" and status.servingVersion == desired then
  hs.status = "Healthy"
  hs.message = "Serving " .. desired
  local acc = percent(status.accuracy)
  if acc ~= nil then
    hs.message = hs.message .. " (accuracy " .. acc .. ")"
  end
  hs.message = hs.message .. ready
  return hs
end

local degraded = condition(status, "Degraded")
local trained = condition(status, "Trained")
local rejected = gate.result == "Rejected" and (gate.version == nil or gate.version == desired)

if phase == "Degraded" or phase == "Failed" or rejected then
  -- The CR's own words: messages before reasons, the gate's before the conditions'.
  local g, d, t = {}, {}, {}
  if gate.result == "Rejected" then
    g = gate
  end
  if degraded ~= nil and degraded.status == "True" then
    d = degraded
  end
  if trained ~= nil and trained.status == "False" then
    t = trained
  end
  local why = first(g.message, d.message, t.message, g.reason, d.reason, t.reason)
  hs.status = "Degraded"
  hs.message = "Version " .. first(gate.version, status.candidateVersion, desired) .. " not served: "
    .. first(why, "phase " .. phase) .. "; " .. serving(status)
  return hs
end

local progress = condition(status, "Progressing")
local detail = ""
if progress ~= nil and progress.status == "True" then
  local m = first(progress.message)
  if m ~= nil then
    detail = ": " .. m
  end
end

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Pending " .. desired .. detail .. "; " .. serving(status)
  return hs
end
if phase == "Training" then
  hs.status = "Progressing"
  hs.message = "Training " .. first(status.candidateVersion, desired) .. detail .. "; " .. serving(status)
  return hs
end
if phase == "RollingOut" then
  hs.status = "Progressing"
  hs.message = "Rolling out " .. desired .. detail .. ready .. "; " .. serving(status)
  return hs
end
if phase == "Serving" then
  -- Serving an older version while the new one has no verdict yet: the operator will move on.
  hs.status = "Progressing"
  hs.message = "Waiting to roll out " .. desired .. "; " .. serving(status)
  return hs
end

hs.status = "Unknown"
hs.message = "Unrecognised phase " .. tostring(phase) .. " (is the operator newer than this health check?)"
return hs
