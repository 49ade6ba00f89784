// Native Lance backbone forward (und + gen paths). Placeholder until the engine lands.
#pragma once
