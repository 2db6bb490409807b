-- Argo CD health of a Holdfast VolumeRestore (backup.holdfast.dev/v1alpha1).
--
-- Read from the kstatus conditions every Holdfast kind carries, so that Argo CD and
-- Flux tell the same story:
--   Stalled=True            -> Degraded     (only a change to the object can help)
--   generation not observed -> Progressing  (the controller has not seen this spec yet)
--   Ready=True              -> Healthy      (every selected volume has been restored)
--   Ready=False             -> Degraded     (not working now; the controller keeps retrying)
--   Pending, reason WaitingForPods
--                           -> Healthy      (it has read the store and holds the pods
--                                            created from now on: an application in a
--                                            later sync wave may be applied)
--   anything else           -> Progressing  (Reconciling, or no status yet)
-- Without the WaitingForPods rule a restore in an earlier sync wave than its
-- application would deadlock: it waits for the pods, the next wave waits for it.
-- The message is the condition's own one-sentence message.
local hs = { status = "Progressing", message = "Waiting for the Holdfast controller to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local ready, reconciling, stalled = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Reconciling" then
    reconciling = c
  elseif c.type == "Stalled" then
    stalled = c
  end
end

-- A condition written for an older generation says nothing about the current spec.
local function current(c)
  return c.observedGeneration == nil or c.observedGeneration >= generation
end

if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end

local observed = obj.status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if observed ~= nil and observed < generation then
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason or "Not ready"
  return hs
end
if obj.status.phase == "Pending" and reconciling ~= nil and reconciling.status == "True" and reconciling.reason == "WaitingForPods" then
  hs.status = "Healthy"
  hs.message = reconciling.message or ""
  return hs
end
if reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= nil then
  hs.message = reconciling.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
end
return hs
