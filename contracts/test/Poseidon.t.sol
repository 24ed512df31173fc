// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {PoseidonT3} from "../src/generated/PoseidonT3.sol";
import {PoseidonT4} from "../src/generated/PoseidonT4.sol";

/// @notice The generated Poseidon libraries against circomlib's published outputs.
contract PoseidonTest is NoxTest {
    function test_t3_matches_circomlib() public pure {
        vm.assertEq(
            PoseidonT3.hash(1, 2), 0x115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a, "Poseidon(1, 2)"
        );
    }

    function test_t4_matches_circomlib() public pure {
        vm.assertEq(
            PoseidonT4.hash(1, 2, 3),
            0x0e7732d89e6939c0ff03d5e58dab6302f3230e269dc5b968f725df34ab36d732,
            "Poseidon(1, 2, 3)"
        );
    }

    /// @dev Reduced results for inputs near the modulus (the lazy reduction must not wrap).
    function test_outputs_are_reduced() public pure {
        uint256 f = PoseidonT3.F;
        vm.assertLe(PoseidonT3.hash(f - 1, f - 1), f - 1, "T3 output in field");
        vm.assertLe(PoseidonT4.hash(f - 1, f - 1, f - 1), f - 1, "T4 output in field");
    }
}
