# Per-target compiler settings. Every target of the project calls
# ipfixweb_target_settings(<target>) instead of touching global flags, so that
# third-party code and generated code are never compiled with our -Werror.

function(ipfixweb_target_settings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wformat=2
    -Wimplicit-fallthrough)
  if(IPFIXWEB_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(IPFIXWEB_SANITIZE)
    target_compile_options(${target} PRIVATE
      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
