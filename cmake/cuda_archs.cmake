# The GPU architectures to build for, from the installed torch: the user's torch runs on the
# GPUs they have, so its arch list (torch.cuda.get_arch_list(), or TORCH_CUDA_ARCH_LIST when
# set) is the best guess of what they need. Each architecture nvcc can target gets machine
# code (NN-real); the newest also gets PTX (NN-virtual), which the driver compiles for newer
# GPUs. A CPU-only torch has no list: then Hopper (90), where our GPU checks run.
function(divaext_archs_from_torch torch_archs nvcc out)
  execute_process(COMMAND "${nvcc}" --list-gpu-arch OUTPUT_VARIABLE _supported
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  string(REGEX MATCHALL "compute_[0-9]+" _supported "${_supported}")
  string(REPLACE "compute_" "" _supported "${_supported}")
  # "sm_80,sm_90,compute_90" (get_arch_list) or "8.0;8.6;9.0+PTX" (TORCH_CUDA_ARCH_LIST)
  string(REGEX MATCHALL "(sm_|compute_)?[0-9]+(\\.[0-9]+)?[a-z]?(\\+PTX)?" _items "${torch_archs}")
  set(_archs "")
  foreach(_item IN LISTS _items)
    string(REGEX REPLACE "^(sm_|compute_)" "" _num "${_item}")
    string(REPLACE "+PTX" "" _num "${_num}")
    string(REPLACE "." "" _num "${_num}")
    string(REGEX REPLACE "[a-z]$" "" _num "${_num}")  # sm_90a → 90: the portable variant
    if(_num MATCHES "^[0-9]+$" AND (NOT _rc EQUAL 0 OR _num IN_LIST _supported))
      list(APPEND _archs "${_num}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _archs)
  list(SORT _archs COMPARE NATURAL)
  if(NOT _archs)
    set(${out} "90" PARENT_SCOPE)
    return()
  endif()
  list(GET _archs -1 _newest)
  set(_result "")
  foreach(_a IN LISTS _archs)
    list(APPEND _result "${_a}-real")
  endforeach()
  list(APPEND _result "${_newest}-virtual")
  set(${out} "${_result}" PARENT_SCOPE)
endfunction()
