--[[
WNoDeS job_submit plugin for Slurm (JobSubmitPlugins=lua; this file beside slurm.conf).

A job that asks for an image, with the standard option `sbatch --constraint=img_<image>` (the
prefix is site configuration) or through a site's static map (partition, account, user or group
to image), gets its batch script wrapped: the batch step then runs the WNoDeS LRMS program, which
asks the WNoDeS gateway for a VM of that image pinned to this node, with the job's cores and
memory, and runs the original script inside it. A job with neither runs bare-metal, unchanged.

An unknown image is refused here, at sbatch time, with a message naming the valid images.
Settings come from wnodes_lrms.lua beside this file (written by the deployment).
]]

local CONFIG = "@WNODES_LRMS_CONFIG@"
local cfg -- read at every submission, so that new images count at once

local function image_from_features(features)
   if features == nil or features == "" then return nil end
   for word in string.gmatch(features, "[^&|,%[%]%*%s]+") do
      local name = string.match(word, "^" .. cfg.feature_prefix .. "([%w%._%-]+)$")
      if name then return name end
   end
   return nil
end

local function image_from_static_map(job_desc, submit_uid)
   local map = cfg.static_map or {}
   if job_desc.partition and map.partition and map.partition[job_desc.partition] then
      return map.partition[job_desc.partition]
   end
   if job_desc.account and map.account and map.account[job_desc.account] then
      return map.account[job_desc.account]
   end
   if job_desc.user_name and map.user and map.user[job_desc.user_name] then
      return map.user[job_desc.user_name]
   end
   if map.uid and map.uid[tostring(submit_uid)] then
      return map.uid[tostring(submit_uid)]
   end
   if job_desc.group_id and map.gid and map.gid[tostring(job_desc.group_id)] then
      return map.gid[tostring(job_desc.group_id)]
   end
   return nil
end

local function valid_images()
   local names = {}
   for name, _ in pairs(cfg.images) do table.insert(names, name) end
   table.sort(names)
   return table.concat(names, ", ")
end

local function wrap(script, image)
   -- A heredoc carries the original script to the LRMS program; its terminator is chosen so
   -- that it cannot appear in the script.
   local terminator = "WNODES_JOB_SCRIPT_END"
   while string.find(script, terminator, 1, true) do
      terminator = terminator .. "_" .. tostring(math.random(100000, 999999))
   end
   return "#!/bin/sh\n"
      .. "# WNoDeS: this job runs in a virtual machine of image " .. image .. "\n"
      .. "exec '" .. cfg.python .. "' -m clients.lrms.slurm_job --config '" .. cfg.json_config .. "' --image '" .. image
      .. "' <<'" .. terminator .. "'\n"
      .. script .. (string.sub(script, -1) == "\n" and "" or "\n")
      .. terminator .. "\n"
end

function slurm_job_submit(job_desc, part_list, submit_uid)
   cfg = dofile(CONFIG)
   local image = image_from_features(job_desc.features) or image_from_static_map(job_desc, submit_uid)
   if image == nil then
      return slurm.SUCCESS -- bare metal, as before
   end
   if not cfg.images[image] then
      slurm.log_user("wnodes: unknown image '%s' (from --constraint=%s%s or the site map); valid images: %s",
                     image, cfg.feature_prefix, image, valid_images())
      return slurm.ERROR
   end
   if job_desc.script == nil or job_desc.script == "" then
      slurm.log_user("wnodes: images are for batch jobs (sbatch); interactive steps run bare-metal")
      return slurm.ERROR
   end
   job_desc.script = wrap(job_desc.script, image)
   if job_desc.features == nil or job_desc.features == "" then
      job_desc.features = cfg.feature_prefix .. image -- a statically mapped job still needs a node that boots it
   end
   job_desc.comment = "wnodes image=" .. image
   slurm.log_info("wnodes: job for uid %d will run in a VM of image %s", submit_uid, image)
   return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
   return slurm.SUCCESS
end

return slurm.SUCCESS
