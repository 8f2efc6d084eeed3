<#
.SYNOPSIS
Install vidtray for this Windows user and start the tray at every login.

.DESCRIPTION
With pipx on PATH, vidtray goes into its own pipx environment; otherwise into a venv under
%LOCALAPPDATA%\vidtray\venv. Then `vidtray autostart enable` registers the windowless
vidtray-tray.exe (no console window) under HKCU\Software\Microsoft\Windows\CurrentVersion\Run.
No administrator rights, nothing outside your user profile.

.PARAMETER Source
What pip installs: a checkout folder, a wheel, or a requirement. Default: this script's checkout
when run from one, else "vidtray".

.PARAMETER Gen
Also install the generation stack (torch, diffusers, transformers).

.PARAMETER TorchIndex
Install torch from this index first, e.g. https://download.pytorch.org/whl/cu124 (CUDA 12.4) or
https://download.pytorch.org/whl/cpu.

.PARAMETER NoAutostart
Do not start the tray at login.

.PARAMETER Start
Start the tray now.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File installer\install.ps1 -Gen -TorchIndex https://download.pytorch.org/whl/cu124 -Start
#>
[CmdletBinding()]
param(
    [string]$Source = "",
    [switch]$Gen,
    [string]$TorchIndex = "",
    [switch]$NoAutostart,
    [switch]$Start
)
$ErrorActionPreference = "Stop"

function Say([string]$Text) { Write-Host "vidtray install: $Text" }
function Die([string]$Text) { Write-Error "vidtray install: error: $Text"; exit 1 }

$checkout = Split-Path -Parent $PSScriptRoot
if (-not $Source) {
    $pyproject = Join-Path $checkout "pyproject.toml"
    if ((Test-Path $pyproject) -and (Select-String -Path $pyproject -Pattern '^name = "vidtray"' -Quiet)) {
        $Source = $checkout
    } else {
        $Source = "vidtray"
    }
}

# A Python 3.11+: the py launcher first (python.exe on PATH may be the Microsoft Store stub).
$python = $null
foreach ($candidate in @(@("py", "-3"), @("python"))) {
    $exe = $candidate[0]
    $rest = @($candidate | Select-Object -Skip 1)
    if (Get-Command $exe -ErrorAction SilentlyContinue) {
        & $exe @rest -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>$null
        if ($LASTEXITCODE -eq 0) { $python = $candidate; break }
    }
}
if (-not $python) { Die "Python 3.11 or newer is needed (https://www.python.org/downloads/windows/)" }
$pyExe = $python[0]
$pyArgs = @($python | Select-Object -Skip 1)

$spec = $Source
if ($Gen) { $spec = "$Source[gen]" }

if (Get-Command pipx -ErrorAction SilentlyContinue) {
    Say "installing $spec with pipx"
    if ($TorchIndex) {
        pipx install --force --pip-args="--extra-index-url $TorchIndex" $spec
    } else {
        pipx install --force $spec
    }
    if ($LASTEXITCODE -ne 0) { Die "pipx install failed" }
    $binDir = (pipx environment --value PIPX_BIN_DIR)
    $vidtray = Join-Path $binDir "vidtray.exe"
} else {
    $home_ = Join-Path $env:LOCALAPPDATA "vidtray"
    $venv = Join-Path $home_ "venv"
    Say "installing $spec into $venv"
    New-Item -ItemType Directory -Force -Path $home_ | Out-Null
    & $pyExe @pyArgs -m venv $venv
    if ($LASTEXITCODE -ne 0) { Die "could not create $venv" }
    $venvPython = Join-Path $venv "Scripts\python.exe"
    & $venvPython -m pip install --quiet --upgrade pip
    if ($Gen -and $TorchIndex) {
        & $venvPython -m pip install --quiet --index-url $TorchIndex torch
        if ($LASTEXITCODE -ne 0) { Die "torch install from $TorchIndex failed" }
    }
    & $venvPython -m pip install --quiet $spec
    if ($LASTEXITCODE -ne 0) { Die "pip install $spec failed" }
    $binDir = Join-Path $venv "Scripts"
    $vidtray = Join-Path $binDir "vidtray.exe"
    # Put vidtray on the user's PATH (takes effect in new terminals).
    $userPath = [Environment]::GetEnvironmentVariable("Path", "User")
    if (-not ($userPath -split ";" | Where-Object { $_ -eq $binDir })) {
        $parts = @($userPath -split ";" | Where-Object { $_ }) + $binDir
        [Environment]::SetEnvironmentVariable("Path", ($parts -join ";"), "User")
        Say "added $binDir to your PATH (open a new terminal to use it)"
    }
}

if (-not (Test-Path $vidtray)) { Die "installed, but $vidtray is missing" }
Say ("installed: " + (& $vidtray --version))

if ($NoAutostart) {
    Say "start on login left off (turn on later: vidtray autostart enable)"
} else {
    # Registers the absolute path of vidtray-tray.exe (a windowless gui-script) in HKCU\...\Run.
    & $vidtray autostart enable
    if ($LASTEXITCODE -ne 0) { Die "vidtray autostart enable failed" }
}

if ($Start) {
    Start-Process -FilePath (Join-Path $binDir "vidtray-tray.exe")
    Say "tray started"
}
Say "done. Try: vidtray doctor"
